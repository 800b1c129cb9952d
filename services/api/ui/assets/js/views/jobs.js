// The job list: filters in the URL, rows that change as the jobs do.

import { get, query, session } from '../api.js';
import { h, replace, statusBadge, when, duration, toast } from '../dom.js';
import { watchProjects } from './live.js';

const statuses = ['scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out', 'expired'];
const priorities = ['high', 'normal', 'low'];

export async function jobsView(main, { params, signal }) {
  const f = Object.fromEntries(['project', 'status', 'priority', 'batch', 'since', 'until'].map((k) => [k, params.get(k) ?? '']));
  const apply = () => {
    const q = new URLSearchParams();
    for (const [k, el] of Object.entries(inputs)) if (el.value) q.set(k, el.type === 'datetime-local' ? new Date(el.value).toISOString() : el.value);
    location.hash = `#/jobs${q.size ? `?${q}` : ''}`;
  };
  const select = (name, values) => h('select', { id: `f-${name}`, name, onchange: apply },
    h('option', { value: '' }, 'any'), values.map((v) => h('option', { value: v, selected: v === f[name] }, v.replace('_', ' '))));
  const inputs = {
    project: select('project', session.projects),
    status: select('status', statuses),
    priority: select('priority', priorities),
    batch: h('input', { id: 'f-batch', name: 'batch', value: f.batch, placeholder: 'batch id', size: 14, onchange: apply }),
    since: h('input', { id: 'f-since', name: 'since', type: 'datetime-local', value: f.since ? local(f.since) : '', onchange: apply }),
    until: h('input', { id: 'f-until', name: 'until', type: 'datetime-local', value: f.until ? local(f.until) : '', onchange: apply }),
  };
  const live = h('span', { class: 'live', id: 'live' }, 'connecting');
  const tbody = h('tbody');
  const table = h('div', { class: 'card flush table-wrap' }, h('table', { id: 'jobs' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Job'), h('th', {}, 'Project'), h('th', {}, 'Status'), h('th', { class: 'opt' }, 'Priority'),
      h('th', { class: 'opt' }, 'Kind'), h('th', { class: 'num opt' }, 'Attempt'), h('th', { class: 'num' }, 'Exit'),
      h('th', { class: 'opt' }, 'Batch'), h('th', {}, 'Submitted'), h('th', { class: 'num opt' }, 'Took'))),
    tbody));
  const more = h('button', { type: 'button', id: 'older', hidden: true, onclick: () => older().catch((e) => toast(e.message)) }, 'Older jobs');
  replace(main,
    h('div', { class: 'head' }, h('h1', {}, 'Jobs'), live, h('span', { class: 'grow' })),
    h('div', { class: 'card' }, h('div', { class: 'filters', role: 'search' },
      Object.entries(inputs).map(([k, el]) => h('label', { for: el.id }, k, el)),
      h('button', { type: 'button', class: 'ghost', onclick: () => { location.hash = '#/jobs'; } }, 'Clear'))),
    table, h('div', { class: 'actions' }, more));

  const rows = new Map(); // job id -> row
  let reloading = null;
  let next = '';
  const add = (jobs) => jobs.map((j) => { const r = row(j); rows.set(j.job_id, r); return r.tr; });
  // load reads the newest jobs again, as many as are shown (older pages
  // included), so a reload keeps what the user paged to.
  const load = async () => {
    const list = await get(`/v1/jobs${query({ ...f, limit: Math.min(1000, Math.max(100, rows.size)) })}`, { signal });
    rows.clear();
    replace(tbody, list.jobs.length ? add(list.jobs)
      : h('tr', {}, h('td', { colspan: 10, class: 'empty' }, 'No jobs match. Submit one with rdev run or POST /v1/projects/{project}/commands.')));
    next = list.next_cursor ?? '';
    more.hidden = !next;
  };
  const older = async () => {
    const list = await get(`/v1/jobs${query({ ...f, cursor: next, limit: 100 })}`, { signal });
    tbody.append(...add(list.jobs.filter((j) => !rows.has(j.job_id))));
    next = list.next_cursor ?? '';
    more.hidden = !next;
  };
  // A job the list does not show yet: load the page again, once per burst.
  const reload = () => {
    reloading ??= setTimeout(() => { reloading = null; if (!signal.aborted) load().catch(() => {}); }, 400);
  };
  signal.addEventListener('abort', () => clearTimeout(reloading));
  await load();
  watchProjects(f.project ? [f.project] : session.projects, {
    signal,
    poll: () => load().catch(() => {}),
    onState: (on) => { live.classList.toggle('on', on); live.textContent = on ? 'live' : 'reconnecting'; },
    onEvent: (ev) => {
      const r = rows.get(ev.job_id);
      if (r) r.update(ev);
      else if ((!f.status || f.status === ev.status) && (!f.batch || f.batch === ev.batch_id)) reload();
    },
  });
}

// row is one job's row, and how it changes with an event.
function row(j) {
  const status = h('td', {}, statusBadge(j.status));
  const attempt = h('td', { class: 'num opt' }, j.attempt || '');
  const exit = h('td', { class: 'num mono' }, j.exit_code ?? '');
  const took = h('td', { class: 'num opt' }, tookOf(j));
  const tr = h('tr', { 'data-job': j.job_id },
    h('td', {}, h('a', { class: 'mono', href: `#/jobs/${j.job_id}` }, j.job_id)),
    h('td', {}, j.project), status, h('td', { class: 'opt' }, j.priority), h('td', { class: 'opt' }, j.kind),
    attempt, exit,
    h('td', { class: 'opt' }, j.batch_id ? h('a', { class: 'mono', href: `#/batches/${j.batch_id}`, title: j.batch_id }, `${j.batch_id.slice(-6)}`) : ''),
    h('td', {}, when(j.submitted_at)), took);
  return {
    tr,
    update(ev) {
      replace(status, statusBadge(ev.status));
      if (ev.attempt) attempt.textContent = ev.attempt;
      if (ev.exit_code !== undefined) exit.textContent = ev.exit_code;
      if (ev.duration_ms) took.textContent = duration(ev.duration_ms / 1000);
      tr.classList.remove('flash');
      void tr.offsetWidth; // restart the animation
      tr.classList.add('flash');
    },
  };
}

function tookOf(j) {
  if (!j.started_at || !j.finished_at) return '';
  return duration((new Date(j.finished_at) - new Date(j.started_at)) / 1000);
}

// local turns an RFC 3339 time into a datetime-local input's value.
function local(t) {
  const d = new Date(t);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}
