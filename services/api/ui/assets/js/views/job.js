// A job: its state, live output, cancel.

import { get, post, enc, query, apiURL, session } from '../api.js';
import { h, replace, statusBadge, when, at, duration, toast, confirmAction, errorBox, shellQuote } from '../dom.js';
import { follow } from '../sse.js';
import { LogView } from '../log.js';
import { config } from '../config.js';

const final = new Set(['succeeded', 'failed', 'cancelled', 'timed_out', 'expired']);

export async function jobView(main, { id, signal }) {
  const opened = Math.round(performance.now());
  let job = await get(`/v1/jobs/${enc(id)}`, { signal });
  const cfg = await config();
  if (signal.aborted) return; // left while config.json loaded (it takes no signal): draw nothing
  const live = h('span', { class: 'live', id: 'live' }, 'connecting');
  const badge = h('span', { id: 'job-status' }, statusBadge(job.status));
  const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel', onclick: cancel }, 'Cancel job');
  const retryBtn = h('button', { type: 'button', class: 'primary', id: 'retry', hidden: true, onclick: retry }, 'Retry');
  const facts = h('div', { class: 'stats', id: 'facts' });
  const message = h('div');
  const claude = job.kind === 'claude';
  // A schedule's run has the id sch-<schedule id>-[m]<time> (ScheduleJobID).
  const schedule = job.job_id.match(/^sch-([\w-]+?)-m?\d{8}T\d{6}Z$/)?.[1];
  const log = new LogView({ download, title: claude ? 'Conversation' : 'Output' });
  if (claude) log.body.classList.add('claude');
  log.body.dataset.openedAt = opened; // for the benchmark: times count from here

  replace(main,
    h('nav', { 'aria-label': 'Breadcrumb', class: 'muted' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', job.project),
    h('div', { class: 'head' }, h('h1', { class: 'mono' }, job.job_id), badge, live, h('span', { class: 'grow' }), retryBtn, cancelBtn),
    message, facts, command(job), log.el);

  function show() {
    replace(badge, statusBadge(job.status));
    cancelBtn.hidden = final.has(job.status) || !session.can(job.project, 'submit');
    cancelBtn.disabled = !!job.cancel_requested;
    if (job.cancel_requested && !final.has(job.status)) cancelBtn.textContent = 'Cancelling…';
    const took = job.started_at ? ((job.finished_at ? new Date(job.finished_at) : new Date()) - new Date(job.started_at)) / 1000 : null;
    const trace = job.trace_id && cfg.trace_url
      ? h('a', { href: cfg.trace_url.replace('{trace_id}', job.trace_id), target: '_blank', rel: 'noopener noreferrer', class: 'mono' }, job.trace_id)
      : job.trace_id ? h('span', { class: 'mono' }, job.trace_id) : '—';
    const fact = (k, v) => h('dl', { class: 'stat' }, h('dt', {}, k), h('dd', {}, v));
    replace(facts,
      fact('Project', job.project),
      fact('Kind · priority', `${job.kind} · ${job.priority}`),
      fact('Submitted', when(job.submitted_at)),
      job.run_at ? fact('Run at', h('span', { id: 'run-at' }, at(job.run_at))) : null,
      job.deadline ? fact('Deadline', h('span', { id: 'deadline' }, at(job.deadline))) : null,
      fact('Started', when(job.started_at)),
      fact(job.status === 'running' ? 'Running for' : 'Ran for', took === null ? '—' : duration(took)),
      fact('Attempt', job.attempt ? `${job.attempt} of ${job.max_attempts || 1}` : '—'),
      fact('Worker', job.worker ? h('span', { class: 'mono' }, job.worker) : '—'),
      fact('Exit code', job.exit_code ?? '—'),
      schedule ? fact('Schedule', h('a', { href: `#/schedules/${job.project}/${schedule}`, class: 'mono', id: 'schedule-link' }, schedule)) : null,
      job.batch_id ? fact('Batch', h('a', { href: `#/batches/${job.batch_id}`, class: 'mono' }, job.batch_id)) : null,
      fact('Trace', trace),
      job.claude ? fact('Session', `${job.claude.num_turns} turns · $${job.claude.cost_usd.toFixed(4)}`) : null,
      job.claude?.model ? fact('Model', job.claude.model) : null);
    replace(message, job.reason ? h('div', { class: job.status === 'succeeded' ? 'warn' : 'error', id: 'reason' },
      `${job.reason}${job.message ? `: ${job.message}` : ''}`) : null);
  }
  show();

  async function cancel() {
    if (!await confirmAction('Cancel this job?', `Job ${job.job_id} will be stopped; a running command gets SIGTERM, then SIGKILL.`, 'Cancel job')) return;
    try {
      job = { ...job, ...await post(`/v1/jobs/${enc(job.job_id)}/cancel`) };
      toast('Cancel requested');
      show();
    } catch (e) {
      replace(message, errorBox(e));
    }
  }

  // Retry submits the job's stored request again as a new job (POST
  // /v1/jobs/{id}/retry). A job whose request is not kept whole (env values
  // are redacted in storage) can still be run again from its dead letter,
  // which admins may retry.
  let dead = null;
  const retriable = () => final.has(job.status) && job.status !== 'succeeded' && session.can(job.project, 'submit');
  async function findDeadLetter() {
    retryBtn.hidden = !retriable();
    if (!session.admin || retryBtn.hidden) return;
    try {
      const page = await get(`/v1/dead-letters${query({ project: job.project, limit: 1000 })}`, { signal });
      dead = page.dead_letters.find((d) => d.id === job.job_id) ?? null;
    } catch { /* the job's own retry is still offered */ }
  }
  findDeadLetter();

  async function retry() {
    if (!await confirmAction('Retry this job?', `Job ${job.job_id} is submitted again as a new job, with the same request.`, 'Retry')) return;
    try {
      let r;
      try {
        r = await post(`/v1/jobs/${enc(job.job_id)}/retry`);
      } catch (e) {
        if (!dead || !['job_env_redacted', 'job_not_retriable'].includes(e.code)) throw e;
        r = await post(`/v1/dead-letters/${enc(dead.id)}/retry${dead.retried ? '?force=true' : ''}`);
      }
      toast(`Queued as ${r.job_id}`);
      location.hash = `#/jobs/${r.job_id}`;
    } catch (e) {
      replace(message, errorBox(e));
    }
  }

  async function download() {
    try {
      const resp = await fetch(apiURL(`/v1/jobs/${enc(job.job_id)}/logs?strip_ansi=true`), { headers: { Authorization: `Bearer ${session.key}` } });
      if (!resp.ok) throw new Error(`download: HTTP ${resp.status}`);
      const url = URL.createObjectURL(await resp.blob());
      const a = h('a', { href: url, download: `${job.job_id}.log` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      toast(e.message);
    }
  }

  // Events update the state without a reload; the terminal one brings the
  // final record (exit code, Claude's session).
  const onStatus = (ev) => {
    job = { ...job, status: ev.status, attempt: ev.attempt || job.attempt, worker: ev.worker || job.worker, reason: ev.reason ?? '', message: ev.message ?? '' };
    if (ev.exit_code !== undefined) job.exit_code = ev.exit_code;
    if (ev.type === 'started') job.started_at = ev.time;
    if (ev.type === 'retrying') log.note(`attempt ${ev.attempt} failed (${ev.reason}); retrying in ${ev.retry_in_seconds}s`);
    show();
  };
  let connectedOnce = false;
  const err = await follow(`/v1/streams/${enc(job.stream_id)}/events${claude ? '?format=claude' : ''}`, {
    signal,
    onState: (on) => { live.classList.toggle('on', on); live.textContent = on ? 'live' : final.has(job.status) ? 'ended' : 'reconnecting'; },
    done: (name) => name === 'complete',
    onEvent: (name, data) => {
      const d = JSON.parse(data);
      switch (name) {
        case 'connected': if (connectedOnce && d.resume_after) log.note('reconnected; resuming'); connectedOnce = true; break;
        case 'output': if (!(claude && sessionStart(d))) log.add(d); break;
        case 'status': onStatus(d); break;
        case 'gap': log.note(`lines ${d.from}–${d.to} were lost`); break;
        case 'complete': onStatus(d); get(`/v1/jobs/${enc(job.job_id)}`, { signal }).then((j) => { job = j; show(); findDeadLetter(); }).catch(() => {}); break;
        case 'assistant': log.block(h('div', { class: 'turn' }, d.text), d.seq); break;
        case 'tool_use': log.block(h('details', {}, h('summary', {}, `tool: ${d.name}`, h('span', { class: 'muted' }, gist(d.input))), h('pre', {}, JSON.stringify(d.input, null, 2))), d.seq); break;
        case 'tool_result': log.block(h('details', { class: d.is_error ? 'tool-error' : '' }, h('summary', {}, d.is_error ? 'tool error' : 'tool result'), h('pre', {}, d.content)), d.seq); break;
        case 'result': log.block(h('div', { class: 'result' }, h('strong', {}, d.is_error ? 'Session failed' : 'Session finished'),
          ` · ${d.num_turns} turns · $${d.cost_usd.toFixed(4)}${d.duration_ms ? ` · ${duration(d.duration_ms / 1000)}` : ''}`,
          d.text ? h('div', { class: 'turn' }, d.text) : null), d.seq); break;
        default: break;
      }
    },
  });
  live.classList.remove('on');
  live.textContent = 'ended';
  if (err && !signal.aborted) replace(message, errorBox(err));

  // sessionStart shows the stream-json line that opens a Claude session as a
  // note rather than raw JSON; it says whether it took the line.
  function sessionStart(line) {
    if (!line.text.startsWith('{"type":"system"')) return false;
    try {
      const m = JSON.parse(line.text);
      if (m.subtype !== 'init') return false;
      log.block(h('div', { class: 'note' }, `session ${m.session_id ?? ''} · ${m.model ?? ''} · tools: ${(m.tools ?? []).join(', ')}`), line.seq);
      return true;
    } catch { return false; }
  }
}

// command shows what the job runs: the argv of a command, quoted as a
// shell would need it, or a Claude job's prompt.
function command(job) {
  if (!job.command?.length) return null;
  if (job.kind === 'claude') {
    const o = job.claude_options ?? {};
    const opts = [o.model, o.max_turns ? `${o.max_turns} turns max` : '', o.resume ? `resumes ${o.resume}` : ''].filter(Boolean).join(' · ');
    return h('section', { class: 'card', 'aria-label': 'Prompt' }, h('h2', {}, 'Prompt', opts ? h('span', { class: 'muted' }, ` · ${opts}`) : null),
      h('pre', { class: 'cmd prompt', id: 'command' }, job.command.at(-1)));
  }
  return h('section', { class: 'card', 'aria-label': 'Command' }, h('h2', {}, 'Command'),
    h('pre', { class: 'cmd', id: 'command' }, job.command.map(shellQuote).join(' ')));
}

// gist is the telling part of a tool call's input, for its folded line.
function gist(input) {
  const v = input?.description ?? input?.command ?? input?.file_path ?? input?.pattern ?? input?.url ?? '';
  const s = String(v).replace(/\s+/g, ' ');
  return s ? ` — ${s.length > 90 ? `${s.slice(0, 90)}…` : s}` : '';
}
