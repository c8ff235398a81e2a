export { Ledger, Publisher, type PublisherState, type RestrictReason, type LedgerLimits } from './ledger';
