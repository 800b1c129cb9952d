// The project selector of views that show one project at a time.

import { session } from '../api.js';
import { h } from '../dom.js';

// projectPicker is a select of the key's projects, project chosen, that
// opens #/<route>/<project> for the one picked.
export function projectPicker(id, route, project) {
  const pick = h('select', { id, onchange: () => { location.hash = `#/${route}/${pick.value}`; } },
    session.projects.map((p) => h('option', { value: p, selected: p === project }, p)));
  return pick;
}
