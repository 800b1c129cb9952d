// Cron schedules of a project: the list with each one's next and last
// run, a schedule's page with its next 5 runs, its last runs and the job
// it submits, and, for keys that may submit to the project, create,
// trigger, pause, resume and delete.

import { get, post, del, enc, session } from '../api.js';
import { h, replace, statusBadge, at, toast, confirmAction, errorBox, shellQuote } from '../dom.js';
import { watchProjects } from './live.js';
import { projectPicker } from './pick.js';

// A view reads its schedules again at most every minGapMS, when a run's
// job appears on the project's event stream, and every pollMS otherwise
// (a schedule changed elsewhere, relative times moving on).
const minGapMS = 3000;
const pollMS = 10000;

const overlaps = ['allow', 'skip', 'cancel_previous'];
const catchUps = ['none', 'one', 'all'];
const priorities = ['high', 'normal', 'low'];

// The list: #/schedules (the first project) or #/schedules/<project>.
export async function schedulesView(main, { id, signal }) {
  const project = id || session.projects[0];
  if (!project) {
    replace(main, h('div', { class: 'head' }, h('h1', {}, 'Schedules')), h('div', { class: 'card empty' }, 'This key sees no project.'));
    return;
  }
  const pick = projectPicker('sched-project', 'schedules', project);
  const live = h('span', { class: 'live', id: 'live' }, 'connecting');
  const message = h('div');
  const tbody = h('tbody');
  const mayChange = session.can(project, 'submit');
  replace(main,
    h('div', { class: 'head' }, h('h1', {}, 'Schedules'), live, h('span', { class: 'grow' }),
      h('label', { for: 'sched-project' }, 'Project', pick)),
    message,
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'schedules' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Schedule'), h('th', {}, 'Cron'), h('th', { class: 'opt' }, 'Timezone'), h('th', {}, 'State'),
        h('th', { class: 'opt' }, 'Overlap'), h('th', { class: 'opt' }, 'Catch-up'), h('th', {}, 'Next run'), h('th', {}, 'Last run'))),
      tbody)),
    mayChange ? createForm(project) : null);

  const load = async () => {
    const { schedules } = await get(`/v1/projects/${enc(project)}/schedules`, { signal });
    replace(tbody, schedules.length ? schedules.map((s) => {
      const last = s.runs?.at(-1);
      return h('tr', { 'data-schedule': s.id, 'data-name': s.name },
        h('td', {}, h('a', { href: `#/schedules/${enc(project)}/${s.id}` }, s.name), h('div', { class: 'muted mono' }, s.id)),
        h('td', { class: 'mono nowrap' }, s.cron), h('td', { class: 'opt' }, s.timezone || 'UTC'),
        h('td', { 'data-paused': s.paused }, pausedBadge(s.paused)),
        h('td', { class: 'opt' }, s.overlap), h('td', { class: 'opt' }, s.catch_up),
        h('td', { class: 'next' }, s.paused ? h('span', { class: 'muted' }, 'paused') : at(s.next_runs[0], s.timezone)),
        h('td', { class: 'last' }, last ? runSummary(last) : h('span', { class: 'muted' }, 'not run yet')));
    }) : h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No schedules in this project.')));
  };
  await load();
  keepFresh(project, '', load, { signal, live, message });
}

// A schedule's page: #/schedules/<project>/<id>.
export async function scheduleView(main, { id: project, sub: id, signal }) {
  const base = `/v1/projects/${enc(project)}/schedules/${enc(id)}`;
  let s = await get(base, { signal });
  const live = h('span', { class: 'live', id: 'live' }, 'connecting');
  const message = h('div');
  const name = h('h1', { id: 'schedule-name' });
  const badge = h('span', { id: 'schedule-state' });
  const facts = h('div', { class: 'stats', id: 'facts' });
  const next = h('ol', { id: 'next-runs', class: 'times' });
  const runs = h('tbody');
  const body = h('div', { id: 'schedule-job' });
  const mayChange = session.can(project, 'submit');
  // act runs an action; a refusal is shown with its code.
  const act = async (action) => {
    try { await action(); replace(message); } catch (e) { replace(message, errorBox(e)); }
  };
  const triggerBtn = h('button', { type: 'button', class: 'primary', id: 'trigger', onclick: () => act(async () => {
    const run = await post(`${base}/trigger`);
    toast(run.job_id ? `Triggered: job ${run.job_id}` : `Triggered: ${run.outcome}`);
    await load();
  }) }, 'Trigger now');
  const pauseBtn = h('button', { type: 'button', id: 'pause', onclick: () => act(async () => {
    s = await post(`${base}/${s.paused ? 'resume' : 'pause'}`);
    toast(s.paused ? 'Paused' : 'Resumed');
    show();
  }) });
  const deleteBtn = h('button', { type: 'button', class: 'danger', id: 'delete', onclick: () => act(async () => {
    if (!await confirmAction(`Delete schedule ${s.name}?`, 'It fires no more; jobs it already queued stay.', 'Delete schedule')) return;
    await del(base);
    toast(`${s.name} deleted`);
    location.hash = `#/schedules/${project}`;
  }) }, 'Delete');
  replace(main,
    h('nav', { 'aria-label': 'Breadcrumb', class: 'muted' }, h('a', { href: `#/schedules/${enc(project)}` }, 'Schedules'), ' / ', project),
    h('div', { class: 'head' }, name, badge, live, h('span', { class: 'grow' }),
      mayChange ? [triggerBtn, pauseBtn, deleteBtn] : null),
    message, facts,
    h('div', { class: 'cols' },
      h('section', { class: 'card', 'aria-label': 'Next runs' }, h('h2', {}, 'Next runs'), next),
      h('section', { class: 'card', 'aria-label': 'Job' }, h('h2', {}, 'Each run submits'), body)),
    h('div', { class: 'card flush table-wrap' }, h('h2', { class: 'logbar' }, 'Last runs'), h('table', { id: 'runs' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Scheduled for'), h('th', {}, 'Outcome'), h('th', {}, 'Job'), h('th', {}, 'Status'))), runs)));

  function show() {
    name.textContent = s.name;
    replace(badge, pausedBadge(s.paused));
    pauseBtn.textContent = s.paused ? 'Resume' : 'Pause';
    pauseBtn.className = s.paused ? 'primary' : '';
    const fact = (k, v) => h('dl', { class: 'stat' }, h('dt', {}, k), h('dd', {}, v));
    replace(facts,
      fact('Cron', h('span', { class: 'mono', id: 'schedule-cron' }, s.cron)),
      fact('Timezone', s.timezone || 'UTC'),
      fact('Overlap', s.overlap),
      fact('Catch-up', s.catch_up),
      fact('Created', at(s.created_at)),
      fact('Id', h('span', { class: 'mono' }, s.id)));
    replace(next, s.next_runs.length ? s.next_runs.map((t) => h('li', {}, at(t, s.timezone)))
      : h('li', { class: 'muted' }, s.paused ? 'None while paused: resuming counts from then.' : 'None.'));
    const last = [...(s.runs ?? [])].reverse(); // newest first
    replace(runs, last.length ? last.map((r) => h('tr', { 'data-run': r.scheduled_at, 'data-outcome': r.outcome },
      h('td', {}, at(r.scheduled_at, s.timezone), r.manual ? h('span', { class: 'pill' }, 'triggered') : null),
      h('td', {}, outcomeBadge(r.outcome), r.message ? h('div', { class: 'muted' }, r.message) : null),
      h('td', {}, r.job_id ? h('a', { class: 'mono', href: `#/jobs/${r.job_id}` }, r.job_id) : ''),
      h('td', {}, r.status ? statusBadge(r.status) : '')))
      : h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'Not run yet.')));
    replace(body, jobBody(s.job));
  }
  const load = async () => { s = await get(base, { signal }); show(); };
  show();
  keepFresh(project, id, load, { signal, live, message });
}

// keepFresh reads a view's schedules again as their runs' jobs change on
// the project's event stream (jobs of schedule id only, when given), and
// every pollMS in any case; never more often than every minGapMS.
function keepFresh(project, id, load, { signal, live, message }) {
  let last = Date.now();
  let pending = null;
  const refresh = () => {
    if (pending || signal.aborted) return;
    pending = setTimeout(async () => {
      try { await load(); } catch (e) { if (!signal.aborted) replace(message, errorBox(e)); }
      last = Date.now();
      pending = null;
    }, Math.max(0, minGapMS - (Date.now() - last)));
  };
  const prefix = id ? `sch-${id}-` : 'sch-';
  const t = setInterval(refresh, pollMS);
  signal.addEventListener('abort', () => { clearInterval(t); clearTimeout(pending); }, { once: true });
  watchProjects([project], {
    signal,
    poll: refresh,
    onState: (on) => { live.classList.toggle('on', on); live.textContent = on ? 'live' : 'reconnecting'; },
    onEvent: (ev) => { if (ev.job_id?.startsWith(prefix)) refresh(); },
  });
}

// createForm makes a schedule that runs a command (one argument per
// line: no shell quoting to get wrong) or a Claude prompt. The API
// validates; its refusal is shown with its code.
function createForm(project) {
  const message = h('div', { id: 'create-error', 'aria-live': 'polite' });
  const field = (id, label, el) => h('label', { for: id }, label, el);
  const select = (id, values, first) => h('select', { id }, first ? h('option', { value: '' }, first) : null,
    values.map((v) => h('option', { value: v }, v.replace('_', ' '))));
  const zones = h('datalist', { id: 's-zones' }, (Intl.supportedValuesOf?.('timeZone') ?? []).map((z) => h('option', { value: z })));
  const name = h('input', { id: 's-name', required: true, maxlength: 100, placeholder: 'nightly' });
  const cron = h('input', { id: 's-cron', required: true, placeholder: '30 2 * * *', spellcheck: 'false', class: 'mono' });
  const zone = h('input', { id: 's-timezone', list: 's-zones', placeholder: 'UTC', spellcheck: 'false' });
  const overlap = select('s-overlap', overlaps);
  const catchUp = select('s-catch-up', catchUps);
  const priority = select('s-priority', priorities, "project's default");
  const kind = select('s-kind', ['command', 'prompt']);
  const argv = h('textarea', { id: 's-command', rows: 3, spellcheck: 'false', placeholder: 'make\nnightly' });
  const prompt = h('textarea', { id: 's-prompt', rows: 3, placeholder: 'Summarise the failing tests' });
  const argvField = field('s-command', 'Command, one argument per line', argv);
  const promptField = field('s-prompt', 'Prompt', prompt);
  const paused = h('input', { id: 's-paused', type: 'checkbox' });
  const showKind = () => { argvField.hidden = kind.value !== 'command'; promptField.hidden = kind.value !== 'prompt'; };
  kind.addEventListener('change', showKind);
  showKind();
  const form = h('form', { class: 'form', id: 'create-schedule', onsubmit: async (e) => {
    e.preventDefault();
    const args = argv.value.replaceAll('\r', '').split('\n');
    while (args.length && args.at(-1) === '') args.pop(); // the newline after the last argument
    const job = kind.value === 'command' ? { command: args } : { prompt: prompt.value };
    if (priority.value) job.priority = priority.value;
    try {
      const s = await post(`/v1/projects/${enc(project)}/schedules`, {
        name: name.value.trim(), cron: cron.value.trim(), timezone: zone.value.trim() || undefined,
        overlap: overlap.value, catch_up: catchUp.value, paused: paused.checked || undefined, job,
      });
      toast(`Schedule ${s.name} created`);
      location.hash = `#/schedules/${project}/${s.id}`;
    } catch (err) { replace(message, errorBox(err)); }
  } },
  field('s-name', 'Name', name), field('s-cron', 'Cron (5 fields or @daily…)', cron), field('s-timezone', 'Timezone', zone), zones,
  field('s-overlap', 'Overlap', overlap), field('s-catch-up', 'Catch-up', catchUp), field('s-priority', 'Priority', priority),
  field('s-kind', 'Runs', kind), argvField, promptField,
  h('label', { for: 's-paused', class: 'check' }, paused, 'Create paused'),
  h('button', { type: 'submit', class: 'primary', id: 'create' }, 'Create schedule'));
  return h('section', { class: 'card', 'aria-label': 'New schedule' }, h('h2', {}, 'New schedule'), message, form,
    h('p', { class: 'muted' }, 'Each run is submitted as this key. Overlap: what a run does while the previous run\u2019s job has not ended. ',
      'Catch-up: which times missed while no API ran are run late.'));
}

// jobBody shows what each run submits: the command or prompt, and the
// options set. Env values are not shown: a plain value may be sensitive,
// a secret reference says only its name.
function jobBody(job) {
  const opts = [];
  const add = (k, v) => { if (v !== undefined && v !== '' && v !== 0 && !(Array.isArray(v) && !v.length)) opts.push(h('dt', {}, k), h('dd', {}, String(v))); };
  add('Priority', job.priority || "project's default");
  add('Timeout', job.timeout_seconds ? `${job.timeout_seconds}s` : undefined);
  add('Attempts', job.max_attempts);
  add('Retry on exit codes', job.retry_on_exit_codes?.join(', '));
  add('Work dir', job.work_dir);
  add('Stderr', job.stderr);
  add('Model', job.model);
  add('Max turns', job.max_turns);
  const env = Object.entries(job.env ?? {});
  if (env.length) {
    opts.push(h('dt', {}, 'Env'), h('dd', { class: 'mono' }, env.map(([k, v]) => (typeof v === 'object' && v?.secret ? `${k}=secret:${v.secret}` : `${k}=…`)).join(' ')));
  }
  return [
    job.prompt ? h('pre', { class: 'cmd prompt', id: 'schedule-command' }, job.prompt)
      : h('pre', { class: 'cmd', id: 'schedule-command' }, (job.command ?? []).map(shellQuote).join(' ')),
    h('dl', { class: 'kv' }, opts),
  ];
}

function pausedBadge(paused) {
  return paused ? h('span', { class: 'status s-queued', 'data-state': 'paused' }, 'paused')
    : h('span', { class: 'status s-succeeded', 'data-state': 'active' }, 'active');
}

// outcomeBadge shows what became of a scheduled time.
function outcomeBadge(outcome) {
  const cls = { queued: 's-running', skipped: 's-cancelled', missed: 's-cancelled', refused: 's-failed' }[outcome] ?? 's-cancelled';
  return h('span', { class: `status ${cls}`, 'data-outcome': outcome }, outcome);
}

// runSummary is a run in a line: its outcome, its job's status and link.
function runSummary(r) {
  return h('span', { class: 'run' }, r.status ? statusBadge(r.status) : outcomeBadge(r.outcome), ' ',
    r.job_id ? h('a', { class: 'mono', href: `#/jobs/${r.job_id}`, title: r.job_id }, r.manual ? 'triggered' : 'job') : null, ' ',
    at(r.scheduled_at));
}
