// `spillway/client` in browsers (the "browser" condition): the global WebSocket and fetch, no Node modules.
export * from './exports';
