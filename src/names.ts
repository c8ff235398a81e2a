import { invalid } from './errors';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A queue or subscription name of API.md, or INVALID_ARGUMENT. */
export function checkName(name: unknown, what = 'name'): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw invalid(`${what} must match ${NAME.source}`, { field: what });
  }
  return name;
}

