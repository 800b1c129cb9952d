// Dead letters: jobs that will not run again by themselves.

import { get, post, del, enc, query } from '../api.js';
import { h, replace, when, toast, confirmAction, errorBox } from '../dom.js';

export async function deadLettersView(main, { params, signal }) {
  const project = params.get('project') ?? '';
  const message = h('div');
  const tbody = h('tbody');
  const detail = h('pre', { class: 'cmd', id: 'dead-detail' });
  const dlg = h('dialog', { 'aria-label': 'Dead letter' }, h('h2', {}, 'Dead letter'), detail,
    h('form', { method: 'dialog', class: 'actions' }, h('button', {}, 'Close')));
  replace(main, h('div', { class: 'head' }, h('h1', {}, 'Dead letters'), h('span', { class: 'grow' })), message,
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'dead-letters' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Job'), h('th', {}, 'Project'), h('th', {}, 'Reason'), h('th', { class: 'num' }, 'Attempts'),
        h('th', { class: 'opt' }, 'Command'), h('th', {}, 'Given up'), h('th', {}, ''))), tbody)), dlg);

  const load = async () => {
    const page = await get(`/v1/dead-letters${query({ project, limit: 200 })}`, { signal });
    replace(tbody, page.dead_letters.length ? page.dead_letters.map((d) => h('tr', { 'data-dead': d.id },
      h('td', {}, h('a', { class: 'mono', href: `#/jobs/${d.id}` }, d.id)),
      h('td', {}, d.job?.project ?? ''),
      h('td', {}, d.reason, d.message ? h('div', { class: 'muted' }, d.message) : null),
      h('td', { class: 'num' }, d.attempts),
      h('td', { class: 'opt mono' }, d.job ? d.job.command.join(' ').slice(0, 80) : 'undecodable'),
      h('td', {}, when(d.time), d.retried ? h('div', { class: 'muted' }, `retried ${d.retried.retries}×`) : null),
      h('td', { class: 'num' }, h('div', { class: 'filters' },
        h('button', { type: 'button', onclick: () => { detail.textContent = JSON.stringify(d, null, 2); dlg.showModal(); } }, 'Inspect'),
        h('button', { type: 'button', class: 'primary', onclick: () => retry(d) }, 'Retry'),
        h('button', { type: 'button', class: 'danger', onclick: () => remove(d) }, 'Delete')))))
      : h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No dead letters. Jobs land here when their attempts are spent on failures that were not the command\u2019s own.')));
  };
  const retry = async (d) => {
    if (!await confirmAction('Retry this job?', `Job ${d.id} is submitted again as a new job.`, 'Retry')) return;
    try {
      const r = await post(`/v1/dead-letters/${enc(d.id)}/retry${d.retried ? '?force=true' : ''}`);
      toast(`Queued as ${r.job_id}`);
      await load();
    } catch (e) { replace(message, errorBox(e)); }
  };
  const remove = async (d) => {
    if (!await confirmAction('Delete this dead letter?', `Dead letter ${d.id} is deleted for good.`, 'Delete')) return;
    try { await del(`/v1/dead-letters/${enc(d.id)}`); toast('Deleted'); await load(); } catch (e) { replace(message, errorBox(e)); }
  };
  await load();
}
