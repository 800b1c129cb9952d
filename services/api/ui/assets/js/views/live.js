// Live updates of job lifecycles: the project event streams of the
// projects a view shows, with a slow poll when there are too many to
// hold a connection each (a browser keeps six per server).

import { follow } from '../sse.js';
import { enc } from '../api.js';

const maxStreams = 3;
const pollMS = 5000;

// watchProjects calls onEvent(event) for every lifecycle event of
// projects until signal aborts, and onState(live) with the feed's state;
// when it cannot stream them all it calls poll() every few seconds
// instead.
export function watchProjects(projects, { onEvent, onState, poll, signal }) {
  if (projects.length > maxStreams) {
    onState(true);
    const t = setInterval(poll, pollMS);
    signal.addEventListener('abort', () => clearInterval(t), { once: true });
    return;
  }
  const open = new Set();
  for (const p of projects) {
    follow(`/v1/projects/${enc(p)}/events`, {
      signal,
      onState: (on) => { if (on) open.add(p); else open.delete(p); onState(open.size === projects.length); },
      onEvent: (name, data) => { if (name === 'status') onEvent(JSON.parse(data)); },
    });
  }
}
