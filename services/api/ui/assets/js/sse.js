// Server-Sent Events over fetch: unlike EventSource, fetch sends the API
// key as an Authorization header (never in the URL) and sets
// Last-Event-ID itself, so a reconnection resumes exactly after the last
// event received, whether the connection broke or the streamer restarted.

import { apiURL, session } from './api.js';

// follow reads the event stream at path until it ends for good (a 204, a
// refusal, or done() returning true after an event) or signal aborts.
// onEvent(name, data, id) gets every event; onState(live) says whether a
// connection is open. It resolves with the refusal (an Error) or null.
export async function follow(path, { onEvent, onState = () => {}, signal, lastEventID = '', done = () => false }) {
  let last = lastEventID;
  let wait = 1000;
  for (;;) {
    if (signal?.aborted) return null;
    let resp;
    try {
      const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${session.key}` };
      if (last) headers['Last-Event-ID'] = last;
      resp = await fetch(apiURL(path), { headers, signal, cache: 'no-store' });
    } catch (e) {
      if (signal?.aborted) return null;
      onState(false);
      await sleep(wait, signal);
      wait = Math.min(wait * 2, 5000);
      continue;
    }
    if (resp.status === 204) { onState(false); return null; }
    if (!resp.ok) {
      onState(false);
      let msg = `HTTP ${resp.status}`;
      try { msg = (await resp.json()).error.message; } catch { /* not JSON */ }
      if (resp.status >= 500 || resp.status === 429) { await sleep(wait, signal); wait = Math.min(wait * 2, 5000); continue; }
      return new Error(msg);
    }
    onState(true);
    wait = 1000;
    let finished = false;
    try {
      for await (const ev of events(resp.body, signal)) {
        if (ev.retry) { wait = Math.max(500, Math.min(ev.retry, 5000)); continue; }
        if (ev.id !== undefined) last = ev.id;
        onEvent(ev.event, ev.data, ev.id);
        if (done(ev.event, ev.data)) { finished = true; break; }
      }
    } catch { /* connection broke: reconnect */ }
    onState(false);
    if (finished) return null;
    if (signal?.aborted) return null;
    await sleep(wait, signal);
  }
}

// events parses an event-stream body into {id, event, data, retry}.
async function* events(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const abort = () => reader.cancel().catch(() => {});
  signal?.addEventListener('abort', abort, { once: true });
  let buf = '';
  let ev = { data: [] };
  let slice = performance.now();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const lines = (buf + value).split('\n');
      buf = lines.pop();
      for (let line of lines) {
        // A backlog arrives in large reads: hand the page back every few
        // milliseconds so it keeps painting and answering input.
        if (performance.now() - slice > sliceMS) { await yieldToPage(); slice = performance.now(); }
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (ev.data.length || ev.event || ev.retry) {
            yield { id: ev.id, event: ev.event || 'message', data: ev.data.join('\n'), retry: ev.retry };
          }
          ev = { data: [] };
          continue;
        }
        if (line.startsWith(':')) continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? '' : line.slice(c + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') ev.data.push(val);
        else if (field === 'event') ev.event = val;
        else if (field === 'id') ev.id = val;
        else if (field === 'retry') ev.retry = Number(val);
      }
    }
  } finally {
    signal?.removeEventListener('abort', abort);
  }
}

const sliceMS = 6;

// yieldToPage lets the browser render and handle input before going on.
function yieldToPage() {
  if (globalThis.scheduler?.yield) return globalThis.scheduler.yield();
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
