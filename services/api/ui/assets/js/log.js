// The output of a job: line numbers, stdout and stderr told apart, ANSI
// colours, follow or pause, search, download. Lines arrive one by one
// but reach the DOM in batches, at most ~10 ms of work per animation
// frame, in chunks the browser skips laying out while they are off
// screen (content-visibility), so 100,000 lines stay responsive.

import { h } from './dom.js';
import * as ansi from './ansi.js';

const chunkLines = 500;
const frameBudgetMS = 8;

export class LogView {
  constructor({ download, title = 'Output' }) {
    this.lines = []; // what search looks through: {text (without escapes), el}
    this.numbered = 0; // output lines among them
    this.pending = [];
    this.lastSeq = 0;
    this.chunk = null;
    this.state = ansi.newState();
    this.following = true;
    this.matches = [];
    this.match = -1;
    this.scheduled = false;
    this.count = h('span', { class: 'muted', 'aria-live': 'off' }, '0 lines');
    this.followBtn = h('button', { type: 'button', 'aria-pressed': 'true', onclick: () => this.setFollow(!this.following) }, 'Follow');
    this.search = h('input', { type: 'search', placeholder: 'Search output', 'aria-label': 'Search output', oninput: () => this.find() });
    this.search.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); this.step(e.shiftKey ? -1 : 1); } });
    this.found = h('span', { class: 'muted', 'aria-live': 'polite' });
    this.body = h('div', { class: 'log', tabindex: '0', role: 'log', 'aria-label': 'Job output', 'data-lines': '0' });
    this.body.addEventListener('scroll', () => {
      if (this.autoScrolling) { this.autoScrolling = false; return; }
      const atEnd = this.body.scrollHeight - this.body.scrollTop - this.body.clientHeight < 24;
      if (atEnd !== this.following) this.setFollow(atEnd, false);
    });
    this.el = h('section', { class: 'card flush', 'aria-label': title },
      h('div', { class: 'logbar' },
        h('strong', {}, title), this.count, this.followBtn, this.search,
        h('button', { type: 'button', 'aria-label': 'Previous match', onclick: () => this.step(-1) }, '↑'),
        h('button', { type: 'button', 'aria-label': 'Next match', onclick: () => this.step(1) }, '↓'),
        this.found,
        h('button', { type: 'button', id: 'download', onclick: download }, 'Download')),
      this.body);
  }

  // add queues an OutputLine; a Seq already shown is dropped (a resumed
  // stream never repeats one, but old streams may hold a line twice).
  add(line) {
    if (line.seq && line.seq <= this.lastSeq) return;
    if (line.seq) this.lastSeq = line.seq;
    this.pending.push(line);
    this.schedule();
  }

  // note queues a remark that is not output (a gap, a restart).
  note(text) { this.pending.push({ note: text }); this.schedule(); }

  // block queues a finished element (a Claude turn).
  block(el, seq) {
    if (seq && seq < this.lastSeq) return; // the events of one line share its seq
    if (seq) this.lastSeq = seq;
    this.pending.push({ block: el });
    this.schedule();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.scheduled = false;
    const start = performance.now();
    const frag = document.createDocumentFragment();
    let chunk = this.chunk;
    let i = 0;
    for (; i < this.pending.length; i++) {
      if ((i & 63) === 63 && performance.now() - start > frameBudgetMS) break;
      const p = this.pending[i];
      if (!chunk || chunk.childElementCount >= chunkLines) {
        chunk = h('div', { class: 'chunk' });
        frag.append(chunk);
      }
      if (p.note !== undefined) { chunk.append(h('div', { class: 'note' }, p.note)); continue; }
      if (p.block) { chunk.append(p.block); this.lines.push({ text: p.block.textContent, el: p.block }); continue; }
      const n = ++this.numbered;
      const el = document.createElement('div');
      el.className = p.fd === 'stderr' ? 'l err' : 'l';
      el.dataset.n = n;
      el.dataset.fd = p.fd;
      ansi.render(el, p.text, this.state);
      chunk.append(el);
      this.lines.push({ text: ansi.strip(p.text), el });
    }
    this.pending = i >= this.pending.length ? [] : this.pending.slice(i);
    this.chunk = chunk;
    this.body.append(frag);
    this.count.textContent = `${this.numbered.toLocaleString()} line${this.numbered === 1 ? '' : 's'}`;
    this.count.hidden = this.numbered === 0 && this.lines.length > 0;
    this.body.dataset.lines = this.numbered;
    this.body.dataset.renderedAt = Math.round(performance.now());
    if (!this.body.dataset.firstPaint && this.numbered) this.body.dataset.firstPaint = this.body.dataset.renderedAt;
    // While a backlog drains, scroll (and so repaint the view) a few times a
    // second rather than every frame.
    if (this.following && (!this.pending.length || start - (this.scrolledAt ?? 0) > 250)) { this.toEnd(); this.scrolledAt = start; }
    if (this.search.value && !this.pending.length) this.find(true);
    if (this.pending.length) this.schedule();
  }

  toEnd() {
    if (this.body.scrollTop + this.body.clientHeight >= this.body.scrollHeight) return;
    this.autoScrolling = true;
    this.body.scrollTop = this.body.scrollHeight;
  }

  setFollow(on, scroll = true) {
    this.following = on;
    this.followBtn.setAttribute('aria-pressed', String(on));
    this.followBtn.textContent = on ? 'Follow' : 'Paused';
    if (on && scroll) this.toEnd();
  }

  // find collects the lines that contain the search text.
  find(keep = false) {
    const q = this.search.value.toLowerCase();
    const before = this.matches[this.match];
    for (const m of this.matches) this.lines[m]?.el.classList.remove('hit');
    this.matches = [];
    if (q) this.lines.forEach((l, i) => { if (l.text.toLowerCase().includes(q)) this.matches.push(i); });
    this.match = keep && before !== undefined ? this.matches.indexOf(before) : -1;
    this.found.textContent = q ? `${this.matches.length.toLocaleString()} matches` : '';
    if (!keep && this.matches.length) this.step(1);
  }

  // step moves to the next (+1) or previous (-1) match.
  step(dir) {
    if (!this.matches.length) return;
    this.lines[this.matches[this.match]]?.el.classList.remove('hit');
    this.match = (this.match + dir + this.matches.length) % this.matches.length;
    const el = this.lines[this.matches[this.match]].el;
    el.classList.add('hit');
    this.setFollow(false);
    el.scrollIntoView({ block: 'center' });
    this.found.textContent = `${this.match + 1} of ${this.matches.length.toLocaleString()}`;
  }
}
