// ANSI SGR escape sequences (colours, bold, …) rendered as styles: the 16
// basic colours as classes of the stylesheet, 256-colour and true-colour
// values as CSSOM properties (allowed by the page's CSP, unlike style
// attributes). Other escape sequences are dropped.

// eslint-disable-next-line no-control-regex
const escapes = /\x1b\[([0-9;:]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>NOM78c]/g;

// hasEscape says whether text needs parsing at all.
export function hasEscape(text) { return text.includes('\x1b'); }

// strip removes every escape sequence (for search and download).
export function strip(text) { return hasEscape(text) ? text.replace(escapes, '') : text; }

// render appends text to el as spans styled by the SGR state carried
// between lines in state (a job's colours may span lines).
export function render(el, text, state) {
  if (!hasEscape(text) && !state.active) { el.append(text); return; }
  let at = 0;
  escapes.lastIndex = 0;
  for (let m; (m = escapes.exec(text));) {
    if (m.index > at) el.append(span(text.slice(at, m.index), state));
    at = m.index + m[0].length;
    if (m[2] === 'm') apply(state, m[1]);
  }
  if (at < text.length) el.append(span(text.slice(at), state));
}

export function newState() { return { active: false, fg: null, bg: null, b: false, d: false, i: false, u: false }; }

function span(text, st) {
  if (!st.active) return text;
  const s = document.createElement('span');
  const cls = [];
  if (st.b) cls.push('b');
  if (st.d) cls.push('d');
  if (st.i) cls.push('i');
  if (st.u) cls.push('u');
  if (typeof st.fg === 'number') cls.push(`fg${st.fg}`); else if (st.fg) s.style.color = st.fg;
  if (typeof st.bg === 'number') cls.push(`bg${st.bg % 8}`); else if (st.bg) s.style.backgroundColor = st.bg;
  s.className = cls.join(' ');
  s.textContent = text;
  return s;
}

function apply(st, params) {
  const p = params === '' ? [0] : params.split(/[;:]/).map((x) => Number(x) || 0);
  for (let i = 0; i < p.length; i++) {
    const n = p[i];
    if (n === 0) Object.assign(st, newState());
    else if (n === 1) st.b = true;
    else if (n === 2) st.d = true;
    else if (n === 3) st.i = true;
    else if (n === 4) st.u = true;
    else if (n === 22) st.b = st.d = false;
    else if (n === 23) st.i = false;
    else if (n === 24) st.u = false;
    else if (n >= 30 && n <= 37) st.fg = n - 30;
    else if (n >= 90 && n <= 97) st.fg = n - 90 + 8;
    else if (n === 39) st.fg = null;
    else if (n >= 40 && n <= 47) st.bg = n - 40;
    else if (n >= 100 && n <= 107) st.bg = (n - 100) % 8;
    else if (n === 49) st.bg = null;
    else if (n === 38 || n === 48) {
      let c = null;
      if (p[i + 1] === 5) { c = color256(p[i + 2]); i += 2; } else if (p[i + 1] === 2) { c = `rgb(${p[i + 2]},${p[i + 3]},${p[i + 4]})`; i += 4; }
      if (n === 38) st.fg = c; else st.bg = c;
    }
  }
  st.active = st.b || st.d || st.i || st.u || st.fg !== null || st.bg !== null;
}

function color256(n) {
  if (n < 16) return n; // a basic colour: its class
  if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
  n -= 16;
  const v = (x) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${v(Math.floor(n / 36))},${v(Math.floor(n / 6) % 6)},${v(n % 6)})`;
}
