export { Propagation, PROPAGATION_STATES, type PropagationState, type PropagationSource } from './propagation';
export { RemoteQueue, type Answer, type Destination, type Link, type LinkEvents, type RemotePublisher, type StateResult } from './destination';
export { parsePropagationConfig, type PropagationConfig } from './config';
