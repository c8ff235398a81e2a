export { Ring } from './ring';
export { type Message, type Encoding, messageId, seqOfId } from './message';
export * as layout from './layout';
