// The queue levels, refreshed every few seconds; admins pause and resume.

import { get, post, enc } from '../api.js';
import { h, replace, duration, toast, confirmAction, errorBox } from '../dom.js';

const refreshMS = 3000;

export async function queuesView(main, { signal }) {
  const tbody = h('tbody');
  const live = h('span', { class: 'live on' }, 'refreshing every 3s');
  const message = h('div');
  replace(main, h('div', { class: 'head' }, h('h1', {}, 'Queues'), live),
    message,
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'queues' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Priority'), h('th', {}, 'State'), h('th', { class: 'num' }, 'Waiting'),
        h('th', { class: 'num' }, 'Running'), h('th', { class: 'num' }, 'Oldest wait'), h('th', { class: 'num' }, 'Dispatched / min'), h('th', {}, ''))),
      tbody)),
    h('p', { class: 'muted' }, 'A paused level keeps its jobs waiting; nothing is lost. Pauses survive restarts and are audited.'));

  const load = async () => {
    const { queues } = await get('/v1/queues', { signal });
    replace(tbody, queues.map((q) => h('tr', { 'data-priority': q.priority },
      h('td', {}, h('strong', {}, q.priority)),
      h('td', {}, q.paused ? h('span', { class: 'status s-queued' }, 'paused') : h('span', { class: 'status s-succeeded' }, 'dispatching')),
      h('td', { class: 'num' }, q.waiting), h('td', { class: 'num' }, q.running),
      h('td', { class: 'num' }, q.oldest_age_seconds ? duration(q.oldest_age_seconds) : '—'),
      h('td', { class: 'num' }, q.dispatched_last_minute),
      h('td', { class: 'num' }, h('button', { type: 'button', class: q.paused ? 'primary' : '', onclick: () => toggle(q) }, q.paused ? 'Resume' : 'Pause')))));
  };
  const toggle = async (q) => {
    const verb = q.paused ? 'resume' : 'pause';
    if (!q.paused && !await confirmAction(`Pause ${q.priority}?`, `Workers stop starting ${q.priority} jobs until the level is resumed.`, 'Pause')) return;
    try {
      await post(`/v1/queues/${enc(q.priority)}/${verb}`);
      toast(`${q.priority} ${q.paused ? 'resumed' : 'paused'}`);
      await load();
    } catch (e) { replace(message, errorBox(e)); }
  };
  await load();
  const t = setInterval(() => load().then(() => replace(message)).catch((e) => { if (!signal.aborted) replace(message, errorBox(e)); }), refreshMS);
  signal.addEventListener('abort', () => clearInterval(t), { once: true });
}
