// Batches: the ones of recent jobs, and one batch's live progress.

import { get, post, enc, session } from '../api.js';
import { h, replace, statusBadge, when, toast, confirmAction, errorBox } from '../dom.js';
import { follow } from '../sse.js';

const final = ['succeeded', 'failed', 'cancelled', 'timed_out', 'expired'];

export async function batchesView(main, { signal }) {
  const open = h('input', { id: 'batch-id', placeholder: 'batch id', 'aria-label': 'Batch id' });
  const { jobs } = await get('/v1/jobs?limit=1000', { signal });
  const seen = new Map();
  for (const j of jobs) {
    if (!j.batch_id) continue;
    const b = seen.get(j.batch_id) ?? { id: j.batch_id, project: j.project, jobs: 0, ended: 0, failed: 0, at: j.submitted_at };
    b.jobs++;
    if (final.includes(j.status)) b.ended++;
    if (j.status !== 'succeeded' && final.includes(j.status)) b.failed++;
    seen.set(j.batch_id, b);
  }
  replace(main,
    h('div', { class: 'head' }, h('h1', {}, 'Batches'), h('span', { class: 'grow' }),
      h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); if (open.value) location.hash = `#/batches/${open.value.trim()}`; } },
        open, h('button', { type: 'submit' }, 'Open'))),
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'batches' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Batch'), h('th', {}, 'Project'), h('th', {}, 'Progress'), h('th', { class: 'num' }, 'Failed'), h('th', {}, 'Submitted'))),
      h('tbody', {}, seen.size ? [...seen.values()].map((b) => h('tr', {},
        h('td', {}, h('a', { class: 'mono', href: `#/batches/${b.id}` }, b.id)), h('td', {}, b.project),
        h('td', {}, `${b.ended} of ${b.jobs} ended`), h('td', { class: 'num' }, b.failed || ''), h('td', {}, when(b.at))))
        : h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No batches among the recent jobs.'))))),
    h('p', { class: 'muted' }, 'Batches of the latest 1,000 jobs (counts of those jobs).'));
}

export async function batchView(main, { id, signal }) {
  let b = await get(`/v1/batches/${enc(id)}?limit=1000`, { signal });
  const live = h('span', { class: 'live', id: 'live' }, 'connecting');
  const bar = h('div', { class: 'progress', role: 'progressbar', 'aria-label': 'Batch progress', 'aria-valuemin': 0, 'aria-valuemax': 100 });
  const pct = h('strong', { id: 'batch-percent' });
  const counts = h('div', { class: 'stats', id: 'counts' });
  const failed = h('tbody');
  const message = h('div');
  const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel-batch', hidden: !session.can(b.project, 'submit'), onclick: async () => {
    if (!await confirmAction('Cancel this batch?', 'Every job of the batch that has not ended is cancelled.', 'Cancel batch')) return;
    try {
      const r = await post(`/v1/batches/${enc(id)}/cancel`);
      toast(`${r.jobs.cancelled + r.jobs.stopping} jobs cancelled`);
    } catch (e) { replace(message, errorBox(e)); }
  } }, 'Cancel batch');
  replace(main,
    h('nav', { 'aria-label': 'Breadcrumb', class: 'muted' }, h('a', { href: '#/batches' }, 'Batches'), ' / ', b.project),
    h('div', { class: 'head' }, h('h1', { class: 'mono' }, b.id), live, h('span', { class: 'grow' }), cancelBtn),
    message,
    h('div', { class: 'card' }, h('div', { class: 'head' }, h('span', {}, 'Progress'), pct), bar),
    counts,
    h('div', { class: 'card flush table-wrap' }, h('h2', { class: 'logbar' }, 'Failed jobs'), h('table', { id: 'failed' }, failed)));

  // Counts come from the server (a batch holds up to 10,000 jobs, more
  // than one page); events trigger a fresh read, at most one a second.
  const states = new Map(b.jobs.map((j) => [j.job_id, j]));
  const show = () => {
    const c = b.counts ?? {};
    const n = Object.values(c).reduce((s, x) => s + x, 0) || 1;
    const ended = final.reduce((s, k) => s + (c[k] ?? 0), 0);
    const p = Math.floor((ended / n) * 100);
    pct.textContent = `${p} %`;
    bar.setAttribute('aria-valuenow', p);
    const seg = (cls, k) => { const s = h('span', { class: cls }); s.style.width = `${((c[k] ?? 0) / n) * 100}%`; return s; };
    replace(bar, seg('p-ok', 'succeeded'), seg('p-bad', 'failed'), seg('p-bad', 'timed_out'), seg('p-off', 'cancelled'));
    replace(counts, ['queued', 'running', ...final].map((k) => h('dl', { class: 'stat' }, h('dt', {}, k.replace('_', ' ')), h('dd', { 'data-count': k }, c[k] ?? 0))));
    const bad = [...states.values()].filter((j) => final.includes(j.status) && j.status !== 'succeeded');
    replace(failed, bad.length ? bad.map((j) => h('tr', {},
      h('td', {}, h('a', { class: 'mono', href: `#/jobs/${j.job_id}` }, j.job_id)), h('td', {}, statusBadge(j.status)),
      h('td', { class: 'mono' }, j.exit_code ?? ''), h('td', {}, j.reason ?? ''), h('td', { class: 'muted' }, j.message ?? '')))
      : h('tr', {}, h('td', { class: 'empty' }, 'None')));
  };
  let pending = null;
  const refresh = () => {
    pending ??= setTimeout(async () => {
      try { b = await get(`/v1/batches/${enc(id)}?limit=1000`, { signal }); show(); } catch { /* the next event tries again */ }
      pending = null;
    }, 1000);
  };
  show();
  await follow(`/v1/batches/${enc(id)}/events`, {
    signal,
    done: (name) => name === 'complete',
    onState: (on) => { live.classList.toggle('on', on); live.textContent = on ? 'live' : 'reconnecting'; },
    onEvent: (name, data) => {
      if (name !== 'status') return;
      const ev = JSON.parse(data);
      states.set(ev.job_id, { ...(states.get(ev.job_id) ?? { job_id: ev.job_id }), status: ev.status, exit_code: ev.exit_code, reason: ev.reason, message: ev.message });
      refresh();
    },
  });
  clearTimeout(pending);
  cancelBtn.hidden = true;
  if (!signal.aborted) { b = await get(`/v1/batches/${enc(id)}?limit=1000`, { signal }); show(); }
  live.classList.remove('on');
  live.textContent = 'complete';
}
