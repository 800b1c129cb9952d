// The dashboard's shell: sign-in, navigation by the URL's fragment (so
// the server serves one page, under any path prefix), and the views.

import { session, get, APIError } from './api.js';
import { h, replace, errorBox } from './dom.js';
import { jobsView } from './views/jobs.js';
import { jobView } from './views/job.js';
import { queuesView } from './views/queues.js';
import { batchesView, batchView } from './views/batches.js';
import { deadLettersView } from './views/dead.js';
import { schedulesView, scheduleView } from './views/schedules.js';
import { projectsView, keysView } from './views/admin.js';
import { webhooksView, webhookView } from './views/webhooks.js';
import { secretsView } from './views/secrets.js';

const main = document.getElementById('main');
let current = null; // the open view's AbortController: its streams end with it

// routes map a fragment to a view; admin views are offered to admin keys only.
const routes = [
  { re: /^#\/jobs\/([\w-]+)$/, view: jobView, nav: 'jobs' },
  { re: /^#\/jobs$/, view: jobsView, nav: 'jobs' },
  { re: /^#\/batches\/([\w-]+)$/, view: batchView, nav: 'batches' },
  { re: /^#\/batches$/, view: batchesView, nav: 'batches' },
  { re: /^#\/schedules\/([\w-]+)\/([\w-]+)$/, view: scheduleView, nav: 'schedules' },
  { re: /^#\/schedules(?:\/([\w-]+))?$/, view: schedulesView, nav: 'schedules' },
  { re: /^#\/queues$/, view: queuesView, nav: 'queues', admin: true },
  { re: /^#\/dead-letters$/, view: deadLettersView, nav: 'dead-letters', admin: true },
  { re: /^#\/projects$/, view: projectsView, nav: 'projects', admin: true },
  { re: /^#\/keys$/, view: keysView, nav: 'keys', admin: true },
  { re: /^#\/webhooks\/([\w-]+)\/([\w-]+)$/, view: webhookView, nav: 'webhooks', admin: true },
  { re: /^#\/webhooks(?:\/([\w-]+))?$/, view: webhooksView, nav: 'webhooks', admin: true },
  { re: /^#\/secrets(?:\/([\w-]+))?$/, view: secretsView, nav: 'secrets', admin: true },
];

// route shows the view of the current fragment.
async function route() {
  current?.abort();
  // This route's own controller: by the time its view fails, a later
  // route may have replaced current, and that one is not aborted.
  const ctl = new AbortController();
  current = ctl;
  if (!session.key) { signIn(); return; }
  const [path, qs] = location.hash.split('?');
  const r = routes.find((x) => x.re.test(path)) ?? routes[1];
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === r.nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (r.admin && !session.admin) {
    replace(main, h('div', { class: 'card empty' }, 'This view needs an admin key.'));
    return;
  }
  const params = new URLSearchParams(qs ?? '');
  const m = path.match(r.re) ?? [];
  try {
    await r.view(main, { id: m[1], sub: m[2], params, signal: ctl.signal });
  } catch (e) {
    if (ctl.signal.aborted) return; // left for another view: not an error
    if (!(e instanceof APIError)) console.error('view failed:', e); // a bug, not a refusal
    replace(main, errorBox(e));
  }
}

// load learns what the key may do (its scopes) and see (its projects);
// the views follow from that.
async function load(key) {
  const [self, { projects }] = await Promise.all([get('/v1/keys/self', { key }), get('/v1/projects', { key })]);
  const admin = self.scopes.includes('admin');
  session.projects = projects.map((p) => p.id);
  session.scopes = self.scopes;
  session.keyID = self.id;
  session.admin = admin;
  document.getElementById('nav').hidden = false;
  document.getElementById('who').hidden = false;
  document.getElementById('who-role').textContent = `${self.name || self.id} · ${admin ? 'admin' : self.scopes.join(' ')}`;
  document.body.classList.toggle('admin', admin);
  for (const a of document.querySelectorAll('#nav a[data-admin]')) a.hidden = !admin;
}

function signIn(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  const input = h('input', { id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false', placeholder: 'rdev_…' });
  const status = h('div', { 'aria-live': 'polite' }, message ? errorBox(message) : null);
  const form = h('form', {
    onsubmit: async (e) => {
      e.preventDefault();
      const key = input.value.trim();
      replace(status);
      try {
        await load(key);
        session.key = key;
        if (!location.hash) location.hash = '#/jobs'; else route();
      } catch (err) {
        replace(status, errorBox(err.status === 401 ? 'That key is not valid, or it is revoked or expired.' : err));
      }
    },
  },
  h('label', { for: 'api-key' }, 'API key', input),
  h('button', { type: 'submit', class: 'primary', id: 'sign-in' }, 'Sign in'));
  replace(main, h('div', { class: 'signin' }, h('div', { class: 'card' },
    h('h1', {}, 'Sign in to rdev'),
    h('p', { class: 'muted' }, 'Use an API key. It stays in this browser tab (session storage) and is sent only to this server.'),
    form, status)));
  input.focus();
}

document.getElementById('sign-out').addEventListener('click', () => {
  session.key = '';
  location.hash = '';
  route();
});
window.addEventListener('rdev:signed-out', () => { session.key = ''; current?.abort(); signIn('The key was refused: sign in again.'); });
window.addEventListener('hashchange', () => { route(); main.focus({ preventScroll: true }); });

(async () => {
  if (session.key) {
    try { await load(session.key); } catch (e) { session.key = ''; signIn(e); return; }
  }
  route();
})();
