// The server's settings for the page (/ui/config.json), read once.

let cached = null;

export function config() {
  cached ??= fetch(new URL('config.json', document.baseURI)).then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  return cached;
}
