package k8sexec

// The shell scripts the executor runs in the container. Everything they
// get from a job (workspace, work dir, environment, argv) is passed as
// positional parameters, never spliced into the script text, so no shell
// ever parses a job's argv.

// wrapperScript runs a job's command: sh -c wrapperScript rdev RUN WS DIR
// MERGE N S K=V... ARGV...
//
// It enters WS and then DIR, exports the N variables, then the S secrets
// it reads from stdin (as secretInput encodes them: a name line and an
// escaped value line each, decoded by printf %b; only shell builtins,
// so the value is in no process's argv), stops reading stdin (the command
// gets /dev/null), checks that argv[0]
// can be run, and writes one header line to stdout: "\x1erdev:ok" or
// "\x1erdev:error:<why>" (a start failure; the executor reports it as
// executor.ErrStart). It then starts the command as the leader of a new
// session and process group (setsid, in a background child that is not
// a group leader, so setsid never forks), with its stderr on its stdout
// when MERGE is 1 (2>&1: one pipe, so the container runtime and the exec
// stream cannot reorder the two), records the group id in RUN,
// waits for the command, kills what is left of its group, and exits with
// the command's status (128+signal when it was killed). A stop request
// that came before the group id was recorded (RUN.stop exists) kills the
// group at once.
const wrapperScript = `run=$1 ws=$2 dir=$3 merge=$4 n=$5 s=$6
shift 6
fail() { printf '\036rdev:error:%s\n' "$1"; exit 127; }
inpath() {
	case $1 in */*) [ -f "$1" ] && [ -x "$1" ]; return ;; esac
	_ifs=$IFS; IFS=:
	for _d in $PATH; do
		if [ -f "${_d:-.}/$1" ] && [ -x "${_d:-.}/$1" ]; then IFS=$_ifs; found=${_d:-.}/$1; return 0; fi
	done
	IFS=$_ifs; return 1
}
inpath setsid || fail "setsid not found in the container; it is needed to stop commands"
setsid=$found
cd -- "$ws" 2>/dev/null || fail "workspace $ws does not exist"
[ -d .rdev/run ] || mkdir -p .rdev/run 2>/dev/null || fail "cannot create $ws/.rdev/run"
if [ -n "$dir" ]; then cd -- "$dir" 2>/dev/null || fail "work dir $dir does not exist or is not a directory"; fi
while [ "$n" -gt 0 ]; do export "$1" || fail "invalid environment variable"; shift; n=$((n-1)); done
while [ "$s" -gt 0 ]; do
	IFS= read -r _k && IFS= read -r _v || fail "secrets: stdin ended early"
	_v=$(printf '%bx' "$_v") || fail "secrets: cannot decode $_k"
	export "$_k=${_v%x}" || fail "invalid environment variable $_k"
	s=$((s-1))
done
_k= _v=
exec </dev/null
inpath "$1" || fail "$1: not found or not executable"
printf '\036rdev:ok\n'
if [ "$merge" = 1 ]; then "$setsid" "$@" 2>&1 & else "$setsid" "$@" & fi
pid=$!
echo "$pid" > "$run"
[ -e "$run.stop" ] && kill -KILL -"$pid" 2>/dev/null
wait "$pid"
code=$?
kill -KILL -"$pid" 2>/dev/null
rm -f -- "$run" "$run.stop"
exit "$code"
`

// stopScript stops a command the wrapper started: sh -c stopScript rdev
// RUN GRACE_TENTHS. It marks RUN as stopped (so a wrapper that has not
// recorded its group yet kills it itself), sends SIGTERM to the recorded
// process group, SIGKILL after the grace, and waits (5s at most) until no
// process of the group is left; a zombie counts as gone, since a
// container's pid 1 may never reap it.
const stopScript = `run=$1 tenths=$2
: > "$run.stop" 2>/dev/null
read -r pg 2>/dev/null < "$run" || exit 0
[ -n "$pg" ] || exit 0
alive() {
	[ -d /proc/self ] || { kill -0 -"$pg" 2>/dev/null; return; }
	for _s in /proc/[0-9]*/stat; do
		read -r _l 2>/dev/null < "$_s" || continue
		set -- ${_l##*) }
		[ "$3" = "$pg" ] && [ "$1" != Z ] && [ "$1" != X ] && return 0
	done
	return 1
}
kill -TERM -"$pg" 2>/dev/null || exit 0
i=0
while [ "$i" -lt "$tenths" ] && alive; do sleep 0.1; i=$((i+1)); done
kill -KILL -"$pg" 2>/dev/null
i=0
while [ "$i" -lt 50 ] && alive; do sleep 0.1; i=$((i+1)); done
exit 0
`
