export { Propagation, WINDOW, PROPAGATION_STATES, type PropagationState, type PropagationSource } from './propagation';
export { HttpDestination, type Destination, type DestinationResult, type RemoteMessage, type RemotePublisher } from './destination';
export { parsePropagationConfig, type PropagationConfig } from './config';
