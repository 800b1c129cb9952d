// Project secrets, for admin keys: names and when each was set, a form
// that sets one (the value typed into a password field, sent once and
// cleared), and Delete. A value is write-only: the API never returns one,
// so the page never holds one after sending it.

import { get, request, del, enc, session } from '../api.js';
import { h, replace, when, toast, confirmAction, errorBox } from '../dom.js';
import { projectPicker } from './pick.js';

// #/secrets (the first project) or #/secrets/<project>.
export async function secretsView(main, { id, signal }) {
  const project = id || session.projects[0];
  if (!project) {
    replace(main, h('div', { class: 'head' }, h('h1', {}, 'Secrets')), h('div', { class: 'card empty' }, 'There is no project yet.'));
    return;
  }
  const path = `/v1/projects/${enc(project)}/secrets`;
  const message = h('div', { id: 'secret-error', 'aria-live': 'polite' });
  const tbody = h('tbody');
  const load = async () => {
    const { secrets } = await get(path, { signal });
    replace(tbody, secrets.length ? secrets.map((s) => h('tr', { 'data-secret': s.name },
      h('td', { class: 'mono' }, s.name), h('td', {}, when(s.updated_at)),
      h('td', { class: 'num' }, h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${s.name}`, onclick: () => remove(s.name) }, 'Delete'))))
      : h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'No secrets in this project.')));
  };
  const remove = async (name) => {
    if (!await confirmAction(`Delete secret ${name}?`, 'A queued job that references it fails when it starts.', 'Delete secret')) return;
    try { await del(`${path}/${enc(name)}`); toast(`${name} deleted`); replace(message); await load(); } catch (e) { replace(message, errorBox(e)); }
  };
  const name = h('input', { id: 'sec-name', required: true, maxlength: 64, pattern: '[A-Za-z0-9_-]+', placeholder: 'anthropic', spellcheck: 'false' });
  const value = h('input', { id: 'sec-value', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { class: 'form', id: 'set-secret', onsubmit: async (e) => {
    e.preventDefault();
    const n = name.value.trim();
    try {
      // PUT answers 201 for a new secret and 204 for a replaced one; both
      // come back as no body, so ask the list which it was beforehand.
      const existed = tbody.querySelector(`tr[data-secret="${CSS.escape(n)}"]`) !== null;
      await request('PUT', `${path}/${enc(n)}`, { value: value.value });
      form.reset(); // the value leaves the page with the request
      toast(`Secret ${n} ${existed ? 'replaced' : 'set'}`);
      replace(message);
      await load();
    } catch (err) { replace(message, errorBox(err)); }
  } },
  h('label', { for: 'sec-name' }, 'Name', name), h('label', { for: 'sec-value' }, 'Value', value),
  h('button', { type: 'submit', class: 'primary', id: 'set' }, 'Set secret'));
  replace(main,
    h('div', { class: 'head' }, h('h1', {}, 'Secrets'), h('span', { class: 'grow' }),
      h('label', { for: 'sec-project' }, 'Project', projectPicker('sec-project', 'secrets', project))),
    message,
    h('div', { class: 'card flush table-wrap' }, h('table', { id: 'secrets' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Set'), h('th', {}, ''))), tbody)),
    h('section', { class: 'card', 'aria-label': 'Set a secret' }, h('h2', {}, 'Set a secret'), form,
      h('p', { class: 'muted' }, 'A job reads it through its env: {"TOKEN": {"secret": "NAME"}}. ',
        'The value is sealed at rest and never shown again, here or in the API; setting a name that exists replaces its value.')));
  await load();
}
