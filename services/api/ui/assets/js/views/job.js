// A job: its state, live output, cancel.

import { get, post, enc, apiURL, session } from '../api.js';
import { h, replace, statusBadge, when, duration, toast, confirmAction, errorBox } from '../dom.js';
import { follow } from '../sse.js';
import { LogView } from '../log.js';
import { config } from '../config.js';

const final = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);

export async function jobView(main, { id, signal }) {
  const opened = Math.round(performance.now());
  let job = await get(`/v1/jobs/${enc(id)}`, { signal });
  const cfg = await config();
  const live = h('span', { class: 'live', id: 'live' }, 'connecting');
  const badge = h('span', { id: 'job-status' }, statusBadge(job.status));
  const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel', onclick: cancel }, 'Cancel job');
  const facts = h('div', { class: 'stats', id: 'facts' });
  const message = h('div');
  const log = new LogView({ download });
  const claude = job.kind === 'claude';
  if (claude) log.body.classList.add('claude');
  log.body.dataset.openedAt = opened; // for the benchmark: times count from here

  replace(main,
    h('nav', { 'aria-label': 'Breadcrumb', class: 'muted' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', job.project),
    h('div', { class: 'head' }, h('h1', { class: 'mono' }, job.job_id), badge, live, h('span', { class: 'grow' }), cancelBtn),
    message, facts, log.el);

  function show() {
    replace(badge, statusBadge(job.status));
    cancelBtn.hidden = final.has(job.status);
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
      fact('Started', when(job.started_at)),
      fact(final.has(job.status) ? 'Ran for' : 'Running for', took === null ? '—' : duration(took)),
      fact('Attempt', job.attempt ? `${job.attempt} of ${job.max_attempts || 1}` : '—'),
      fact('Worker', job.worker ? h('span', { class: 'mono' }, job.worker) : '—'),
      fact('Exit code', job.exit_code ?? '—'),
      job.batch_id ? fact('Batch', h('a', { href: `#/batches/${job.batch_id}`, class: 'mono' }, job.batch_id)) : null,
      fact('Trace', trace),
      job.claude ? fact('Claude', `${job.claude.num_turns} turns · $${job.claude.cost_usd.toFixed(4)}${job.claude.model ? ` · ${job.claude.model}` : ''}`) : null);
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
        case 'output': log.add(d); break;
        case 'status': onStatus(d); break;
        case 'gap': log.note(`lines ${d.from}–${d.to} were lost`); break;
        case 'complete': onStatus(d); get(`/v1/jobs/${enc(job.job_id)}`, { signal }).then((j) => { job = j; show(); }).catch(() => {}); break;
        case 'assistant': log.block(h('div', { class: 'turn' }, d.text), d.seq); break;
        case 'tool_use': log.block(h('details', {}, h('summary', {}, `tool: ${d.name}`), h('pre', {}, JSON.stringify(d.input, null, 2))), d.seq); break;
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
}
