// `spillway/client` in Node: the client with the `ws` package as its WebSocket.
import { setDefaultTransport } from './client';
import { wsTransportInfo, wsTransport } from './ws-transport';

setDefaultTransport(wsTransportInfo);

export * from './exports';
export { wsTransport };
