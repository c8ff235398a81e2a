export { buildServer, startServer, DEFAULT_BODY_LIMIT, type ServerOptions, type StartOptions, type RunningServer } from './server';
export { Auth, Principal, globToRegExp, type AuthConfig, type TokenSpec, type Permission } from './auth';
export { toSpillwayError } from './errors';
export { createRegistry, type MetricsOptions } from './metrics';
export type { WebSocketOptions } from './ws';
