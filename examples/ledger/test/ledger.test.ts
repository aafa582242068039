import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createTestService, given } from 'cairn/testing'
import type { TestService } from 'cairn/testing'
import {
  Account,
  CreditForTransfer,
  DebitForTransfer,
  Deposit,
  OpenAccount,
  RequestTransfer,
  Withdraw,
  ledger,
} from '../domain.ts'

describe('ledger deciders', () => {
  test('a new account opens; an open one refuses to open again', () => {
    given([])
      .when(OpenAccount, { account_id: 'a', owner: 'Ada' })
      .then([{ type: 'AccountOpened', data: { owner: 'Ada' } }])
    given([{ type: 'AccountOpened', data: { owner: 'Ada' } }])
      .when(OpenAccount, { account_id: 'a', owner: 'Ada' })
      .thenRejected('ACCOUNT_EXISTS')
  })

  test('a withdrawal above the balance is rejected with the reason', () => {
    given([
      { type: 'AccountOpened', data: { owner: 'Ada' } },
      { type: 'Deposited', data: { amount: 500 } },
    ])
      .when(Withdraw, { account_id: 'a', amount: 501 })
      .thenRejected('INSUFFICIENT_FUNDS', 'balance 500 is below 501')
  })

  test('a transfer debit is declined, not rejected, so the process manager can react', () => {
    given([{ type: 'AccountOpened', data: { owner: 'Ada' } }])
      .when(DebitForTransfer, { account_id: 'a', transfer_id: 't1', to: 'b', amount: 10 })
      .then([
        {
          type: 'TransferDebitDeclined',
          data: { transfer_id: 't1', reason: 'insufficient funds' },
        },
      ])
    given([])
      .when(CreditForTransfer, { account_id: 'b', transfer_id: 't1', from: 'a', amount: 10 })
      .then([
        {
          type: 'TransferCreditDeclined',
          data: {
            transfer_id: 't1',
            from: 'a',
            amount: 10,
            reason: 'the target account is not open',
          },
        },
      ])
  })

  test('a transfer needs two different accounts', () => {
    given([])
      .when(RequestTransfer, { transfer_id: 't', from: 'a', to: 'a', amount: 1 })
      .thenRejected('SAME_ACCOUNT')
  })
})

describe('ledger service (embedded, in process)', () => {
  let svc: TestService
  before(async () => {
    svc = await createTestService(ledger)
  })
  after(() => svc.destroy())

  test('accounts, a transfer through the process manager, and the balance projection', async () => {
    const open = async (id: string, owner: string) => {
      const r = await svc.request<{ command_id: string }>('POST', '/api/v1/accounts', {
        account_id: id,
        owner,
      })
      assert.equal(r.status, 202, JSON.stringify(r.body))
      return r.body.command_id
    }
    await svc.waitForCommand(await open('alice', 'Alice'))
    await svc.waitForCommand(await open('bob', 'Bob'))
    const dep = await svc.request<{ command_id: string }>(
      'POST',
      '/api/v1/accounts/alice/deposits',
      { amount: 1000 },
    )
    assert.equal(dep.status, 202)
    assert.equal((await svc.waitForCommand(dep.body.command_id)).outcome, 'completed')

    const t = await svc.request('POST', '/api/v1/transfers', {
      transfer_id: 't-1',
      from: 'alice',
      to: 'bob',
      amount: 300,
    })
    assert.equal(t.status, 202)
    await svc.settle()
    assert.deepEqual((await svc.request('GET', '/api/v1/transfers/t-1')).body, {
      id: 't-1',
      from: 'alice',
      to: 'bob',
      amount: 300,
      status: 'completed',
      reason: null,
    })
    assert.equal(
      (await svc.request<{ balance: number }>('GET', '/api/v1/accounts/alice')).body.balance,
      700,
    )
    assert.equal(
      (await svc.request<{ balance: number }>('GET', '/api/v1/accounts/bob')).body.balance,
      300,
    )
    const alice = await svc.load(Account, 'alice')
    assert.deepEqual(alice.state, { open: true, balance: 700 })
  })

  test('a transfer to an account that is not open is refunded and fails', async () => {
    await svc.send(OpenAccount, { account_id: 'carol', owner: 'Carol' })
    await svc.send(Deposit, { account_id: 'carol', amount: 50 })
    await svc.send(RequestTransfer, { transfer_id: 't-2', from: 'carol', to: 'nobody', amount: 20 })
    await svc.settle()
    const t = (
      await svc.request<{ status: string; reason: string }>('GET', '/api/v1/transfers/t-2')
    ).body
    assert.equal(t.status, 'failed')
    assert.match(t.reason, /refunded/)
    assert.equal(
      (await svc.request<{ balance: number }>('GET', '/api/v1/accounts/carol')).body.balance,
      50,
    )
  })

  test('malformed requests are 4xx problems that name the field', async () => {
    type Problem = { problems: { pointer: string }[] }
    const r = await svc.request<Problem>('POST', '/api/v1/accounts/alice/deposits', { amount: -5 })
    assert.equal(r.status, 400)
    assert.equal(r.headers['content-type'], 'application/problem+json')
    assert.equal(r.body.problems[0]?.pointer, '/amount')
    const bad = await svc.request<Problem>('POST', '/api/v1/accounts/al%20ice/deposits', {
      amount: 5,
    })
    assert.equal(bad.status, 400)
    assert.equal(bad.body.problems[0]?.pointer, '#/path/account_id')
  })
})
