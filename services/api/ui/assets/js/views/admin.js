// Projects and keys, for admin keys.

import { get, post, patch, del, enc, session } from '../api.js';
import { h, replace, when, toast, confirmAction, errorBox } from '../dom.js';

const list = (s) => s.split(/[\s,]+/).filter(Boolean);

export async function projectsView(main, { signal }) {
  const message = h('div');
  const tbody = h('tbody');
  const id = h('input', { id: 'p-id', required: true, pattern: '[a-z0-9]([a-z0-9-]*[a-z0-9])?', placeholder: 'my-project' });
  const name = h('input', { id: 'p-name', placeholder: 'My project' });
  const ips = h('input', { id: 'p-ips', placeholder: '10.0.0.0/8, 192.0.2.7' });
  const conc = h('input', { id: 'p-conc', type: 'number', min: 0, placeholder: '0 = no limit' });
  const create = h('form', { class: 'form', onsubmit: async (e) => {
    e.preventDefault();
    try {
      await post('/v1/projects', { id: id.value.trim(), name: name.value.trim() || undefined, allowed_ips: list(ips.value), max_concurrent_jobs: Number(conc.value) || undefined });
      toast(`Project ${id.value} created`);
      create.reset();
      await load();
    } catch (err) { replace(message, errorBox(err)); }
  } },
  h('label', { for: 'p-id' }, 'Id', id), h('label', { for: 'p-name' }, 'Name', name), h('label', { for: 'p-ips' }, 'Allowed IPs', ips),
  h('label', { for: 'p-conc' }, 'Max concurrent jobs', conc), h('button', { type: 'submit', class: 'primary' }, 'Create project'));
  replace(main, h('div', { class: 'head' }, h('h1', {}, 'Projects')), message,
    h('section', { class: 'card', 'aria-label': 'New project' }, h('h2', {}, 'New project'), create),
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'projects' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Project'), h('th', {}, 'Allowed IPs'), h('th', { class: 'num' }, 'Max concurrent'),
        h('th', { class: 'opt' }, 'Rate limit'), h('th', { class: 'opt' }, 'Created'), h('th', {}, ''))), tbody)));

  const load = async () => {
    const { projects } = await get('/v1/projects', { signal });
    replace(tbody, projects.map((p) => {
      const ipIn = h('input', { value: (p.allowed_ips ?? []).join(', '), 'aria-label': `Allowed IPs of ${p.id}`, placeholder: 'any' });
      const concIn = h('input', { type: 'number', min: 0, value: p.max_concurrent_jobs, 'aria-label': `Max concurrent jobs of ${p.id}`, size: 4 });
      const rateIn = h('input', { value: p.rate_limit ? `${p.rate_limit.requests}/${p.rate_limit.window_seconds}s` : '', placeholder: 'e.g. 100/60s', 'aria-label': `Rate limit of ${p.id}`, size: 10 });
      return h('tr', { 'data-project': p.id },
        h('td', {}, h('strong', {}, p.id), p.name && p.name !== p.id ? h('div', { class: 'muted' }, p.name) : null),
        h('td', {}, ipIn), h('td', { class: 'num' }, concIn), h('td', { class: 'opt' }, rateIn), h('td', { class: 'opt' }, when(p.created_at)),
        h('td', { class: 'num' }, h('div', { class: 'filters' },
          h('button', { type: 'button', onclick: () => save(p, ipIn.value, concIn.value, rateIn.value) }, 'Save'),
          h('button', { type: 'button', class: 'danger', onclick: () => remove(p) }, 'Delete'))));
    }));
  };
  const save = async (p, ipsV, concV, rateV) => {
    const body = { allowed_ips: list(ipsV), max_concurrent_jobs: Number(concV) || 0 };
    const m = rateV.trim().match(/^(\d+)\s*\/\s*(\d+)\s*s?$/);
    if (rateV.trim() && !m) { replace(message, errorBox('Rate limit: write requests/seconds, e.g. 100/60s.')); return; }
    body.rate_limit = m ? { requests: Number(m[1]), window_seconds: Number(m[2]) } : (p.rate_limit ? { requests: 0, window_seconds: 0 } : undefined);
    try { await patch(`/v1/projects/${enc(p.id)}`, body); toast(`${p.id} saved`); replace(message); await load(); } catch (e) { replace(message, errorBox(e)); }
  };
  const remove = async (p) => {
    if (!await confirmAction(`Delete project ${p.id}?`, 'Its running and queued jobs are cancelled; its keys stop working for it.', 'Delete project')) return;
    try { await del(`/v1/projects/${enc(p.id)}`); toast(`${p.id} deleted`); await load(); } catch (e) { replace(message, errorBox(e)); }
  };
  await load();
}

export async function keysView(main, { signal }) {
  const message = h('div');
  const tbody = h('tbody');
  const name = h('input', { id: 'k-name', required: true, placeholder: 'ci-deployer' });
  const scopes = h('input', { id: 'k-scopes', required: true, placeholder: 'project:web:submit project:web:read', size: 30 });
  const ips = h('input', { id: 'k-ips', placeholder: 'any' });
  const created = h('div', { id: 'key-created', 'aria-live': 'polite' });
  const create = h('form', { class: 'form', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const k = await post('/v1/keys', { name: name.value.trim(), scopes: list(scopes.value), allowed_ips: list(ips.value) });
      create.reset();
      const secret = h('code', { id: 'key-secret' }, k.key);
      replace(created, h('div', { class: 'card' },
        h('h2', {}, `Key ${k.id} created`),
        h('p', { class: 'warn' }, 'Copy the secret now: it is shown only once and cannot be read again.'),
        h('div', { class: 'secret' }, secret, h('button', { type: 'button', class: 'primary', onclick: async () => {
          try { await navigator.clipboard.writeText(k.key); toast('Copied'); } catch { getSelection().selectAllChildren(secret); toast('Press Ctrl+C to copy'); }
        } }, 'Copy')),
        h('button', { type: 'button', class: 'ghost', onclick: () => replace(created) }, 'Done, I stored it')));
      await load();
    } catch (err) { replace(message, errorBox(err)); }
  } },
  h('label', { for: 'k-name' }, 'Name', name), h('label', { for: 'k-scopes' }, 'Scopes', scopes), h('label', { for: 'k-ips' }, 'Allowed IPs', ips),
  h('button', { type: 'submit', class: 'primary', id: 'create-key' }, 'Create key'));
  replace(main, h('div', { class: 'head' }, h('h1', {}, 'API keys')), message, created,
    h('section', { class: 'card', 'aria-label': 'New key' }, h('h2', {}, 'New key'), create,
      h('p', { class: 'muted' }, 'Scopes: admin, read (every project), or project:<id>:read|submit, separated by spaces.')),
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'keys' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Key'), h('th', {}, 'Scopes'), h('th', { class: 'opt' }, 'Allowed IPs'), h('th', { class: 'opt' }, 'Last used'), h('th', {}, 'State'), h('th', {}, ''))), tbody)));

  const load = async () => {
    const { keys } = await get('/v1/keys', { signal });
    replace(tbody, keys.map((k) => h('tr', { 'data-key': k.id },
      h('td', {}, h('strong', {}, k.name || k.id), h('div', { class: 'muted mono' }, k.id)),
      h('td', { class: 'mono' }, k.scopes.join(' ')),
      h('td', { class: 'opt mono' }, (k.allowed_ips ?? []).join(', ') || 'any'),
      h('td', { class: 'opt' }, when(k.last_used_at)),
      h('td', {}, k.revoked_at ? h('span', { class: 'status s-cancelled' }, 'revoked') : h('span', { class: 'status s-succeeded' }, 'active')),
      h('td', { class: 'num' }, k.revoked_at ? null : k.id === session.keyID ? h('span', { class: 'muted' }, 'signed in with it')
        : h('button', { type: 'button', class: 'danger', onclick: () => revoke(k) }, 'Revoke')))));
  };
  const revoke = async (k) => {
    if (!await confirmAction(`Revoke ${k.name || k.id}?`, 'Requests with this key are refused from now on, and its open streams end.', 'Revoke')) return;
    try { await del(`/v1/keys/${enc(k.id)}`); toast('Revoked'); await load(); } catch (e) { replace(message, errorBox(e)); }
  };
  await load();
}
