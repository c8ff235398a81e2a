import { invalid } from '../errors';
import { checkName } from '../names';

export interface PropagationConfig {
  url: string;
  queue: string;
  token?: string;
  filter?: { attributes: Record<string, string> };
}

/** Validates a propagation body of API.md. */
export function parsePropagationConfig(body: unknown): PropagationConfig {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('propagation config must be a JSON object with url and queue');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (k !== 'url' && k !== 'queue' && k !== 'token' && k !== 'filter') throw invalid(`unknown field: ${k}`, { field: k });
  if (typeof b.url !== 'string') throw invalid('url must be the destination server, e.g. "http://host:8080"', { field: 'url' });
  let url: URL;
  try {
    url = new URL(b.url);
  } catch {
    throw invalid(`url is not a URL: ${JSON.stringify(b.url)}`, { field: 'url' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('url must be http:// or https://', { field: 'url' });
  const cfg: PropagationConfig = { url: b.url.replace(/\/+$/, ''), queue: checkName(b.queue, 'queue') };
  if (b.token !== undefined) {
    if (typeof b.token !== 'string' || b.token.length === 0) throw invalid('token must be a non-empty string', { field: 'token' });
    cfg.token = b.token;
  }
  if (b.filter !== undefined) {
    const f = b.filter as Record<string, unknown>;
    const attrs = typeof f === 'object' && f !== null ? f.attributes : undefined;
    if (typeof attrs !== 'object' || attrs === null || Array.isArray(attrs) || Object.keys(f).some((k) => k !== 'attributes')) {
      throw invalid('filter must be {"attributes": {name: value}}', { field: 'filter' });
    }
    const out = Object.create(null) as Record<string, string>;
    for (const [k, v] of Object.entries(attrs)) {
      if (typeof v !== 'string') throw invalid('filter.attributes values must be strings', { field: 'filter' });
      out[k] = v;
    }
    cfg.filter = { attributes: out };
  }
  return cfg;
}
