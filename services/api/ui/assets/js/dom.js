// Building DOM nodes without parsing HTML: text is always text, so nothing a
// job prints can become markup.

// h creates an element: attrs are attributes ("on…" functions become
// listeners, false/null are left out); children are nodes or strings.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

// replace empties el and fills it with children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// statusBadge shows a job status.
export function statusBadge(status) {
  return h('span', { class: `status s-${status}`, 'data-status': status }, status.replace('_', ' '));
}

// ago says how long ago t was, e.g. "3m ago".
export function ago(t) {
  if (!t) return '';
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  return `${duration(s)} ago`;
}

// duration writes seconds as "850ms", "12s", "3m 4s", "2h 5m".
export function duration(s) {
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${Math.round(s * 10) / 10}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

// when writes a time for people, with the exact time as a tooltip.
export function when(t) {
  if (!t) return h('span', { class: 'muted' }, '—');
  const d = new Date(t);
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, ago(t));
}

// fromNow says how far t is from now, either way: "in 3m 4s", "12s ago".
export function fromNow(t) {
  const s = (new Date(t).getTime() - Date.now()) / 1000;
  return s >= 0 ? `in ${duration(s)}` : `${duration(-s)} ago`;
}

// at writes a time relative to now and, beside it, the wall time in zone
// (an IANA name; the browser's own when empty), with the browser's local
// time as a tooltip: a schedule's times read in the zone its cron is in.
export function at(t, zone = '') {
  if (!t) return h('span', { class: 'muted' }, '—');
  const d = new Date(t);
  let wall;
  try {
    wall = new Intl.DateTimeFormat('en-CA', { timeZone: zone || undefined, year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23', timeZoneName: 'short' }).format(d).replace(',', '');
  } catch { wall = d.toISOString(); } // a zone this browser does not know
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, fromNow(t), h('span', { class: 'muted abs' }, wall));
}

// shellQuote writes an argument as a POSIX shell would need it.
export function shellQuote(arg) {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

// toast shows a short message that goes away.
export function toast(msg) {
  const el = h('div', {}, msg);
  document.getElementById('toast').append(el);
  setTimeout(() => el.remove(), 2500);
}

// confirmAction asks before something that cannot be undone.
export function confirmAction(title, text, verb = 'Confirm') {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = verb;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true }));
}

// errorBox shows an API error, with the API's machine-readable code when
// it gave one (e.g. invalid_cron).
export function errorBox(err) {
  return h('div', { class: 'error', role: 'alert' }, err?.message ?? String(err),
    err?.code ? h('code', { class: 'code', 'data-code': err.code }, err.code) : null);
}
