import Type from 'typebox'
import {
  defineAggregate,
  defineDomain,
  defineEvent,
  defineProcessManager,
  defineProjection,
  defineQuery,
  reject,
  send,
} from 'cairn'

/**
 * A small ledger on cairn: accounts, and transfers between two accounts carried out by a process
 * manager (debit the source, credit the target, refund the source if the credit is declined).
 * Amounts are integers in cents.
 */

const Id = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' })
const Cents = Type.Integer({ minimum: 1, maximum: 1_000_000_000_00 })

// ---- accounts ----

export const AccountOpened = defineEvent(
  'AccountOpened',
  Type.Object({ owner: Type.String({ minLength: 1, maxLength: 200 }) }),
)
export const Deposited = defineEvent('Deposited', Type.Object({ amount: Cents }))
export const Withdrawn = defineEvent('Withdrawn', Type.Object({ amount: Cents }))
export const DebitedForTransfer = defineEvent(
  'DebitedForTransfer',
  Type.Object({ transfer_id: Id, to: Id, amount: Cents }),
)
export const TransferDebitDeclined = defineEvent(
  'TransferDebitDeclined',
  Type.Object({ transfer_id: Id, reason: Type.String() }),
)
export const CreditedForTransfer = defineEvent(
  'CreditedForTransfer',
  Type.Object({ transfer_id: Id, from: Id, amount: Cents }),
)
export const TransferCreditDeclined = defineEvent(
  'TransferCreditDeclined',
  Type.Object({ transfer_id: Id, from: Id, amount: Cents, reason: Type.String() }),
)
export const RefundedForTransfer = defineEvent(
  'RefundedForTransfer',
  Type.Object({ transfer_id: Id, amount: Cents }),
)

type AccountState = { readonly open: boolean; readonly balance: number }

export const Account = defineAggregate({
  type: 'Account',
  events: [
    AccountOpened,
    Deposited,
    Withdrawn,
    DebitedForTransfer,
    TransferDebitDeclined,
    CreditedForTransfer,
    TransferCreditDeclined,
    RefundedForTransfer,
  ],
  initialState: (): AccountState => ({ open: false, balance: 0 }),
  evolve: (state, event): AccountState => {
    switch (event.type) {
      case 'AccountOpened':
        return { open: true, balance: 0 }
      case 'Deposited':
      case 'CreditedForTransfer':
      case 'RefundedForTransfer':
        return { ...state, balance: state.balance + event.data.amount }
      case 'Withdrawn':
      case 'DebitedForTransfer':
        return { ...state, balance: state.balance - event.data.amount }
      case 'TransferDebitDeclined':
      case 'TransferCreditDeclined':
        return state
    }
  },
  snapshotEvery: 100,
  topics: { commands: 'ledger_account_commands', events: 'ledger_account_events' },
})

const mustBeOpen = (state: AccountState) =>
  state.open ? null : reject('ACCOUNT_NOT_OPEN', 'the account is not open')

export const OpenAccount = Account.command({
  type: 'OPEN_ACCOUNT',
  schema: Type.Object(
    { account_id: Id, owner: Type.String({ minLength: 1, maxLength: 200 }) },
    { additionalProperties: false },
  ),
  aggregateId: (c) => c.account_id,
  expect: 'new',
  http: { method: 'POST', path: '/api/v1/accounts' },
  decide: (c, state) =>
    state.open
      ? reject('ACCOUNT_EXISTS', `account ${c.account_id} is already open`)
      : [{ type: 'AccountOpened', data: { owner: c.owner } }],
})

export const Deposit = Account.command({
  type: 'DEPOSIT',
  schema: Type.Object({ account_id: Id, amount: Cents }, { additionalProperties: false }),
  aggregateId: (c) => c.account_id,
  http: { method: 'POST', path: '/api/v1/accounts/:account_id/deposits' },
  decide: (c, state) => mustBeOpen(state) ?? [{ type: 'Deposited', data: { amount: c.amount } }],
})

export const Withdraw = Account.command({
  type: 'WITHDRAW',
  schema: Type.Object({ account_id: Id, amount: Cents }, { additionalProperties: false }),
  aggregateId: (c) => c.account_id,
  http: { method: 'POST', path: '/api/v1/accounts/:account_id/withdrawals' },
  decide: (c, state) =>
    mustBeOpen(state) ??
    (state.balance < c.amount
      ? reject('INSUFFICIENT_FUNDS', `balance ${state.balance} is below ${c.amount}`)
      : [{ type: 'Withdrawn', data: { amount: c.amount } }]),
})

/** Sent by the transfer process manager only: no route (`http: false`), so no client can call it. */
export const DebitForTransfer = Account.command({
  type: 'DEBIT_FOR_TRANSFER',
  schema: Type.Object(
    { account_id: Id, transfer_id: Id, to: Id, amount: Cents },
    { additionalProperties: false },
  ),
  http: false,
  aggregateId: (c) => c.account_id,
  decide: (c, state) =>
    !state.open || state.balance < c.amount
      ? [
          {
            type: 'TransferDebitDeclined',
            data: {
              transfer_id: c.transfer_id,
              reason: state.open ? 'insufficient funds' : 'the source account is not open',
            },
          },
        ]
      : [
          {
            type: 'DebitedForTransfer',
            data: { transfer_id: c.transfer_id, to: c.to, amount: c.amount },
          },
        ],
})

export const CreditForTransfer = Account.command({
  type: 'CREDIT_FOR_TRANSFER',
  schema: Type.Object(
    { account_id: Id, transfer_id: Id, from: Id, amount: Cents },
    { additionalProperties: false },
  ),
  http: false,
  aggregateId: (c) => c.account_id,
  decide: (c, state) => {
    const { transfer_id, from, amount } = c
    return state.open
      ? [{ type: 'CreditedForTransfer', data: { transfer_id, from, amount } }]
      : [
          {
            type: 'TransferCreditDeclined',
            data: { transfer_id, from, amount, reason: 'the target account is not open' },
          },
        ]
  },
})

export const RefundForTransfer = Account.command({
  type: 'REFUND_FOR_TRANSFER',
  schema: Type.Object(
    { account_id: Id, transfer_id: Id, amount: Cents },
    { additionalProperties: false },
  ),
  http: false,
  aggregateId: (c) => c.account_id,
  decide: (c) => [
    { type: 'RefundedForTransfer', data: { transfer_id: c.transfer_id, amount: c.amount } },
  ],
})

// ---- transfers ----

export const TransferRequested = defineEvent(
  'TransferRequested',
  Type.Object({ from: Id, to: Id, amount: Cents }),
)
export const TransferCompleted = defineEvent('TransferCompleted', Type.Object({}))
export const TransferFailed = defineEvent('TransferFailed', Type.Object({ reason: Type.String() }))

type TransferState =
  | { readonly status: 'none' }
  | {
      readonly status: 'pending' | 'completed' | 'failed'
      readonly from: string
      readonly to: string
      readonly amount: number
    }

export const Transfer = defineAggregate({
  type: 'Transfer',
  events: [TransferRequested, TransferCompleted, TransferFailed],
  initialState: (): TransferState => ({ status: 'none' }),
  evolve: (state, event): TransferState => {
    switch (event.type) {
      case 'TransferRequested':
        return { status: 'pending', ...event.data }
      case 'TransferCompleted':
        return state.status === 'none' ? state : { ...state, status: 'completed' }
      case 'TransferFailed':
        return state.status === 'none' ? state : { ...state, status: 'failed' }
    }
  },
  topics: { commands: 'ledger_transfer_commands', events: 'ledger_transfer_events' },
})

export const RequestTransfer = Transfer.command({
  type: 'REQUEST_TRANSFER',
  schema: Type.Object(
    { transfer_id: Id, from: Id, to: Id, amount: Cents },
    { additionalProperties: false },
  ),
  aggregateId: (c) => c.transfer_id,
  expect: 'new',
  http: { method: 'POST', path: '/api/v1/transfers' },
  decide: (c, state) => {
    if (state.status !== 'none')
      return reject('TRANSFER_EXISTS', `transfer ${c.transfer_id} exists`)
    if (c.from === c.to) return reject('SAME_ACCOUNT', 'a transfer needs two different accounts')
    return [{ type: 'TransferRequested', data: { from: c.from, to: c.to, amount: c.amount } }]
  },
})

export const CompleteTransfer = Transfer.command({
  type: 'COMPLETE_TRANSFER',
  schema: Type.Object({ transfer_id: Id }, { additionalProperties: false }),
  http: false,
  aggregateId: (c) => c.transfer_id,
  decide: (_c, state) =>
    state.status === 'pending' ? [{ type: 'TransferCompleted', data: {} }] : [],
})

export const FailTransfer = Transfer.command({
  type: 'FAIL_TRANSFER',
  schema: Type.Object({ transfer_id: Id, reason: Type.String() }, { additionalProperties: false }),
  http: false,
  aggregateId: (c) => c.transfer_id,
  decide: (c, state) =>
    state.status === 'pending' ? [{ type: 'TransferFailed', data: { reason: c.reason } }] : [],
})

/** Debit, then credit; a declined debit fails the transfer, a declined credit refunds first. */
export const Transfers = defineProcessManager({
  name: 'transfers',
  events: [
    TransferRequested,
    DebitedForTransfer,
    TransferDebitDeclined,
    CreditedForTransfer,
    TransferCreditDeclined,
    RefundedForTransfer,
  ],
  react: (event) => {
    switch (event.type) {
      case 'TransferRequested':
        return [
          send(DebitForTransfer, {
            account_id: event.data.from,
            transfer_id: event.aggregateId,
            to: event.data.to,
            amount: event.data.amount,
          }),
        ]
      case 'DebitedForTransfer':
        return [
          send(CreditForTransfer, {
            account_id: event.data.to,
            transfer_id: event.data.transfer_id,
            from: event.aggregateId,
            amount: event.data.amount,
          }),
        ]
      case 'TransferDebitDeclined':
        return [
          send(FailTransfer, { transfer_id: event.data.transfer_id, reason: event.data.reason }),
        ]
      case 'CreditedForTransfer':
        return [send(CompleteTransfer, { transfer_id: event.data.transfer_id })]
      case 'TransferCreditDeclined':
        return [
          send(RefundForTransfer, {
            account_id: event.data.from,
            transfer_id: event.data.transfer_id,
            amount: event.data.amount,
          }),
        ]
      case 'RefundedForTransfer':
        return [
          send(FailTransfer, {
            transfer_id: event.data.transfer_id,
            reason: 'the target account is not open; refunded',
          }),
        ]
    }
  },
})

// ---- read model ----

/** Balances and transfers, as tables of the service's database. */
export const Balances = defineProjection({
  name: 'balances',
  events: [
    AccountOpened,
    Deposited,
    Withdrawn,
    DebitedForTransfer,
    CreditedForTransfer,
    RefundedForTransfer,
    TransferRequested,
    TransferCompleted,
    TransferFailed,
  ],
  setup: ({ table }) => `
    CREATE TABLE IF NOT EXISTS ${table('ledger_accounts')} (
      id text PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, seq bigint NOT NULL);
    CREATE TABLE IF NOT EXISTS ${table('ledger_transfers')} (
      id text PRIMARY KEY, source text NOT NULL, target text NOT NULL, amount bigint NOT NULL,
      status text NOT NULL, reason text, seq bigint NOT NULL);`,
  reset: async ({ tx, table }) => {
    await tx.query(`DELETE FROM ${table('ledger_accounts')}`)
    await tx.query(`DELETE FROM ${table('ledger_transfers')}`)
  },
  apply: async (events, { tx, table }) => {
    const accounts = table('ledger_accounts')
    const transfers = table('ledger_transfers')
    for (const e of events) {
      const seq = e.meta.sequence
      switch (e.type) {
        case 'AccountOpened':
          await tx.query(
            `INSERT INTO ${accounts} (id, owner, balance, seq) VALUES ($1, $2, 0, $3)`,
            [e.aggregateId, e.data.owner, seq],
          )
          break
        case 'Deposited':
        case 'CreditedForTransfer':
        case 'RefundedForTransfer':
          await tx.query(`UPDATE ${accounts} SET balance = balance + $2, seq = $3 WHERE id = $1`, [
            e.aggregateId,
            e.data.amount,
            seq,
          ])
          break
        case 'Withdrawn':
        case 'DebitedForTransfer':
          await tx.query(`UPDATE ${accounts} SET balance = balance - $2, seq = $3 WHERE id = $1`, [
            e.aggregateId,
            e.data.amount,
            seq,
          ])
          break
        case 'TransferRequested':
          await tx.query(
            `INSERT INTO ${transfers} (id, source, target, amount, status, seq)
             VALUES ($1, $2, $3, $4, 'pending', $5)`,
            [e.aggregateId, e.data.from, e.data.to, e.data.amount, seq],
          )
          break
        case 'TransferCompleted':
          await tx.query(`UPDATE ${transfers} SET status = 'completed', seq = $2 WHERE id = $1`, [
            e.aggregateId,
            seq,
          ])
          break
        case 'TransferFailed':
          await tx.query(
            `UPDATE ${transfers} SET status = 'failed', reason = $2, seq = $3 WHERE id = $1`,
            [e.aggregateId, e.data.reason, seq],
          )
          break
      }
    }
  },
})

export const GetAccount = defineQuery({
  name: 'account',
  path: '/api/v1/accounts/:account_id',
  schema: Type.Object({ account_id: Id }),
  // bigint as float8: a JSON number, exact for any amount in cents up to 2^53 (int4 overflows).
  run: async ({ account_id }, { sql, table }) => {
    const rows = await sql.query(
      `SELECT id, owner, balance::float8 AS balance, seq::float8 AS seq FROM ${table('ledger_accounts')} WHERE id = $1`,
      [account_id],
    )
    return rows[0] ?? null
  },
})

export const GetTransfer = defineQuery({
  name: 'transfer',
  path: '/api/v1/transfers/:transfer_id',
  schema: Type.Object({ transfer_id: Id }),
  run: async ({ transfer_id }, { sql, table }) => {
    const rows = await sql.query(
      `SELECT id, source AS "from", target AS "to", amount::float8 AS amount, status, reason
         FROM ${table('ledger_transfers')} WHERE id = $1`,
      [transfer_id],
    )
    return rows[0] ?? null
  },
})

export const ledger = defineDomain({
  name: 'ledger',
  aggregates: [Account, Transfer],
  commands: [
    OpenAccount,
    Deposit,
    Withdraw,
    DebitForTransfer,
    CreditForTransfer,
    RefundForTransfer,
    RequestTransfer,
    CompleteTransfer,
    FailTransfer,
  ],
  processManagers: [Transfers],
  projections: [Balances],
  queries: [GetAccount, GetTransfer],
})
