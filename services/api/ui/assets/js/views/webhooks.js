// Webhook endpoints of a project, for admin keys: the list with each
// one's health and a create form (the signing secret shown once), and an
// endpoint's page: send a test ping, turn it off and on, rotate its
// secret, delete it, and its deliveries with their attempts and a
// Redeliver for the finished ones.

import { get, post, patch, del, enc, query, session } from '../api.js';
import { h, replace, when, at, toast, confirmAction, errorBox } from '../dom.js';
import { projectPicker } from './pick.js';

// The types an endpoint may subscribe to, as contracts.WebhookEventTypes
// lists them (the browser test holds the two together).
const eventTypes = ['job.started', 'job.succeeded', 'job.failed', 'job.cancelled', 'job.timed_out', 'job.retrying', 'job.dead_lettered', 'batch.completed'];

// An endpoint's page reads it and its deliveries again this often:
// attempts and retries happen in the notifier, which tells the page
// nothing.
const pollMS = 3000;

const base = (project, id) => `/v1/projects/${enc(project)}/webhooks${id ? `/${enc(id)}` : ''}`;

// The list: #/webhooks (the first project) or #/webhooks/<project>.
export async function webhooksView(main, { id, signal }) {
  const project = id || session.projects[0];
  if (!project) {
    replace(main, h('div', { class: 'head' }, h('h1', {}, 'Webhooks')), h('div', { class: 'card empty' }, 'There is no project yet.'));
    return;
  }
  const pick = projectPicker('wh-project', 'webhooks', project);
  const message = h('div');
  const created = h('div', { id: 'webhook-created', 'aria-live': 'polite' });
  const tbody = h('tbody');
  const load = async () => {
    const { webhooks } = await get(base(project), { signal });
    replace(tbody, webhooks.length ? webhooks.map((w) => h('tr', { 'data-webhook': w.id },
      h('td', {}, h('a', { href: `#/webhooks/${enc(project)}/${w.id}`, class: 'mono' }, w.url), h('div', { class: 'muted mono' }, w.id)),
      h('td', { class: 'mono' }, w.events.join(' ')),
      h('td', {}, healthBadge(w)),
      h('td', { class: 'opt' }, w.description || ''),
      h('td', { class: 'opt' }, when(w.created_at))))
      : h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No webhooks in this project.')));
  };
  replace(main,
    h('div', { class: 'head' }, h('h1', {}, 'Webhooks'), h('span', { class: 'grow' }), h('label', { for: 'wh-project' }, 'Project', pick)),
    message, created,
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'webhooks' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Endpoint'), h('th', {}, 'Events'), h('th', {}, 'State'), h('th', { class: 'opt' }, 'Description'),
        h('th', { class: 'opt' }, 'Created'))), tbody)),
    createForm(project, created, load));
  await load();
}

// createForm creates an endpoint and shows its signing secret, this once.
function createForm(project, created, load) {
  const message = h('div', { id: 'create-error', 'aria-live': 'polite' });
  const url = h('input', { id: 'w-url', type: 'url', required: true, placeholder: 'https://ci.example.com/rdev', size: 40, spellcheck: 'false' });
  const desc = h('input', { id: 'w-description', maxlength: 200, placeholder: 'CI alerts' });
  const boxes = eventTypes.map((e) => h('input', { type: 'checkbox', id: `w-ev-${e.replace('.', '-')}`, value: e, checked: e === 'job.failed' }));
  const form = h('form', { class: 'form', id: 'create-webhook', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const w = await post(base(project), { url: url.value.trim(), description: desc.value.trim() || undefined,
        events: boxes.filter((b) => b.checked).map((b) => b.value) });
      form.reset();
      replace(message);
      replace(created, secretCard(`Webhook ${w.id} created`, w.secret, h('a', { href: `#/webhooks/${enc(project)}/${w.id}` }, 'Open it')));
      await load();
    } catch (err) { replace(message, errorBox(err)); }
  } },
  h('label', { for: 'w-url' }, 'URL', url), h('label', { for: 'w-description' }, 'Description', desc),
  h('fieldset', { class: 'events' }, h('legend', {}, 'Events'),
    boxes.map((b) => h('label', { for: b.id, class: 'check' }, b, b.value))),
  h('button', { type: 'submit', class: 'primary', id: 'create' }, 'Create webhook'));
  return h('section', { class: 'card', 'aria-label': 'New webhook' }, h('h2', {}, 'New webhook'), message, form,
    h('p', { class: 'muted' }, 'Deliveries are signed (Standard Webhooks): give the secret shown after creating to the receiver. ',
      'Private and loopback addresses are refused unless the notifier allows them (--webhook-allow-cidrs).'));
}

// secretCard shows a signing secret once, with a Copy button.
function secretCard(title, secret, ...more) {
  const code = h('code', { id: 'webhook-secret' }, secret);
  const card = h('div', { class: 'card' },
    h('h2', {}, title),
    h('p', { class: 'warn' }, 'Copy the signing secret now: it is shown only once and cannot be read again.'),
    h('div', { class: 'secret' }, code, h('button', { type: 'button', class: 'primary', onclick: async () => {
      try { await navigator.clipboard.writeText(secret); toast('Copied'); } catch { getSelection().selectAllChildren(code); toast('Press Ctrl+C to copy'); }
    } }, 'Copy')),
    h('div', { class: 'filters' }, h('button', { type: 'button', class: 'ghost', onclick: () => card.remove() }, 'Done, I stored it'), more));
  return card;
}

// An endpoint's page: #/webhooks/<project>/<id>.
export async function webhookView(main, { id: project, sub: id, signal }) {
  const path = base(project, id);
  let w = await get(path, { signal });
  const message = h('div');
  const rotated = h('div', { 'aria-live': 'polite' });
  const title = h('h1', { id: 'webhook-url', class: 'mono' });
  const badge = h('span', { id: 'webhook-state' });
  const facts = h('div', { class: 'stats', id: 'facts' });
  const status = h('select', { id: 'd-status', onchange: () => loadDeliveries() },
    h('option', { value: '' }, 'all'), ['pending', 'succeeded', 'failed', 'exhausted'].map((s) => h('option', { value: s }, s)));
  const tbody = h('tbody');
  const act = async (action) => {
    try { await action(); replace(message); } catch (e) { replace(message, errorBox(e)); }
  };
  const toggle = h('button', { type: 'button', id: 'toggle', onclick: () => act(async () => {
    w = await patch(path, { active: !w.active });
    toast(w.active ? 'Turned on' : 'Turned off');
    show();
  }) });
  replace(main,
    h('nav', { 'aria-label': 'Breadcrumb', class: 'muted' }, h('a', { href: `#/webhooks/${enc(project)}` }, 'Webhooks'), ' / ', project),
    h('div', { class: 'head' }, title, badge, h('span', { class: 'grow' }),
      h('button', { type: 'button', class: 'primary', id: 'test', onclick: () => act(async () => {
        const d = await post(`${path}/test`);
        toast(`Ping ${d.id} queued`);
        await loadDeliveries();
      }) }, 'Send test ping'),
      toggle,
      h('button', { type: 'button', id: 'rotate', onclick: () => act(async () => {
        if (!await confirmAction('Rotate the signing secret?', 'A new secret signs from now on; the previous one keeps signing beside it for a while, so the receiver can switch.', 'Rotate')) return;
        const r = await post(`${path}/rotate-secret`);
        replace(rotated, secretCard('New signing secret', r.secret));
        w = await get(path, { signal });
        show();
      }) }, 'Rotate secret'),
      h('button', { type: 'button', class: 'danger', id: 'delete', onclick: () => act(async () => {
        if (!await confirmAction('Delete this webhook?', `Nothing more is sent to ${w.url}.`, 'Delete webhook')) return;
        await del(path);
        toast('Webhook deleted');
        location.hash = `#/webhooks/${project}`;
      }) }, 'Delete')),
    message, rotated, facts,
    h('div', { class: 'card flush table-wrap' },
      h('div', { class: 'logbar' }, h('h2', {}, 'Deliveries'), h('span', { class: 'grow' }), h('label', { for: 'd-status' }, 'Status', status)),
      h('table', { id: 'deliveries' }, h('thead', {}, h('tr', {}, h('th', {}, 'Created'), h('th', {}, 'Type'), h('th', { class: 'opt' }, 'Job'),
        h('th', {}, 'Status'), h('th', { class: 'num' }, 'Attempts'), h('th', {}, 'Last answer'), h('th', {}, ''))), tbody)));

  function show() {
    title.textContent = w.url;
    replace(badge, healthBadge(w));
    toggle.textContent = w.active ? 'Turn off' : 'Turn on';
    const fact = (k, v) => h('dl', { class: 'stat' }, h('dt', {}, k), h('dd', {}, v));
    replace(facts,
      fact('Events', h('span', { class: 'mono', id: 'webhook-events' }, w.events.join(' '))),
      w.description ? fact('Description', w.description) : null,
      w.failing_since ? fact('Failing since', when(w.failing_since)) : null,
      w.previous_secret_expires_at ? fact('Previous secret signs until', at(w.previous_secret_expires_at)) : null,
      fact('Created', when(w.created_at)),
      fact('Id', h('span', { class: 'mono' }, w.id)));
  }

  // Rows whose attempts are open stay open across reloads; a reload that
  // finds nothing changed leaves the table (and the focus in it) alone.
  const open = new Set();
  let shown = '';
  async function loadDeliveries() {
    const { deliveries } = await get(`${path}/deliveries${query({ status: status.value, limit: 50 })}`, { signal });
    const now = JSON.stringify([deliveries, [...open]]);
    if (now === shown) return;
    shown = now;
    const rows = [];
    for (const d of deliveries) {
      rows.push(deliveryRow(d));
      if (open.has(d.id)) rows.push(await attemptsRow(d.id));
    }
    replace(tbody, rows.length ? rows : h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No deliveries.')));
  }
  function deliveryRow(d) {
    const final = d.status !== 'pending';
    return h('tr', { 'data-delivery': d.id, 'data-status': d.status },
      h('td', {}, when(d.created_at), h('div', { class: 'muted mono' }, d.id)),
      h('td', { class: 'mono' }, d.type),
      h('td', { class: 'opt' }, d.job_id ? h('a', { class: 'mono', href: `#/jobs/${d.job_id}` }, d.job_id) : ''),
      h('td', {}, deliveryBadge(d.status), d.status === 'pending' && d.next_attempt_at ? h('div', { class: 'muted' }, 'next ', at(d.next_attempt_at)) : null),
      h('td', { class: 'num' }, d.attempts),
      h('td', { class: 'last' }, lastAnswer(d)),
      h('td', { class: 'num' }, h('div', { class: 'filters' },
        h('button', { type: 'button', class: 'attempts', 'aria-expanded': String(open.has(d.id)), onclick: () => act(async () => {
          if (open.has(d.id)) open.delete(d.id); else open.add(d.id);
          await loadDeliveries();
        }) }, 'Attempts'),
        final ? h('button', { type: 'button', class: 'redeliver', onclick: () => act(async () => {
          await post(`${path}/deliveries/${enc(d.id)}/redeliver`);
          toast(`${d.id} sent again`);
          await loadDeliveries();
        }) }, 'Redeliver') : null)));
  }
  async function attemptsRow(deliveryID) {
    const d = await get(`${path}/deliveries/${enc(deliveryID)}`, { signal });
    return h('tr', { class: 'attempt-log', 'data-attempts-of': d.id }, h('td', { colspan: 7 },
      d.attempt_log.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'At'), h('th', {}, 'Answer'), h('th', { class: 'num' }, 'Latency'),
        h('th', {}, 'Response body or error'))),
      h('tbody', {}, d.attempt_log.map((a) => h('tr', { 'data-code': a.status_code ?? 0 },
        h('td', {}, when(a.at)), h('td', {}, a.status_code ? String(a.status_code) : 'none'), h('td', { class: 'num' }, `${a.latency_ms} ms`),
        h('td', { class: 'mono' }, a.error || a.response_body || ''))))) : h('span', { class: 'muted' }, 'Not tried yet.')));
  }

  show();
  await loadDeliveries();
  // The endpoint's health changes with its deliveries' answers (failing,
  // disabled by rdev): both are read again.
  const t = setInterval(async () => {
    try {
      const [now] = await Promise.all([get(path, { signal }), loadDeliveries()]);
      if (JSON.stringify(now) !== JSON.stringify(w)) { w = now; show(); }
    } catch (e) { if (!signal.aborted) replace(message, errorBox(e)); }
  }, pollMS);
  signal.addEventListener('abort', () => clearInterval(t), { once: true });
}

// healthBadge says whether an endpoint receives: active, failing (since
// when), turned off, or disabled by rdev (and why).
function healthBadge(w) {
  if (w.active && w.failing_since) return h('span', { class: 'status s-failed', 'data-state': 'failing', title: `failing since ${w.failing_since}` }, 'failing');
  if (w.active) return h('span', { class: 'status s-succeeded', 'data-state': 'active' }, 'active');
  if (w.disabled_reason) return h('span', { class: 'status s-failed', 'data-state': 'disabled' }, `disabled: ${w.disabled_reason}`);
  return h('span', { class: 'status s-cancelled', 'data-state': 'off' }, 'off');
}

function deliveryBadge(status) {
  const cls = { pending: 's-running', succeeded: 's-succeeded', failed: 's-failed', exhausted: 's-failed' }[status] ?? 's-cancelled';
  return h('span', { class: `status ${cls}` }, status);
}

// lastAnswer is what the last attempt got: a status code, or why none.
function lastAnswer(d) {
  if (!d.attempts) return h('span', { class: 'muted' }, 'not tried yet');
  const code = d.last_status_code ? String(d.last_status_code) : 'no answer';
  return [code, d.last_latency_ms !== undefined ? h('span', { class: 'muted' }, ` · ${d.last_latency_ms} ms`) : null,
    d.last_error ? h('div', { class: 'muted' }, d.last_error) : null];
}
