import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { murmur2 as kafkaMurmur2 } from '@platformatic/kafka'
import { murmur2, partitionOf } from '../../../src/core/ports/bus.ts'
import { busContract } from '../../contract/bus.ts'
import { inProcessBusCase } from '../../support/bus.ts'

busContract([inProcessBusCase()])

// Kafka's own test vectors (UtilsTest.testMurmur2), so keys land where Java clients put them.
test('murmur2 matches the Java client on its published vectors', () => {
  const vectors: [string, number][] = [
    ['21', -973932308],
    ['foobar', -790332482],
    ['a-little-bit-long-string', -985981536],
    ['a-little-bit-longer-string', -1486304829],
    ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ['abc', 479470107],
  ]
  for (const [input, hash] of vectors) assert.equal(murmur2(new TextEncoder().encode(input)), hash)
})

test('murmur2 agrees with the Kafka client on any bytes; partitions are in range', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), fc.integer({ min: 1, max: 64 }), (data, n) => {
      assert.equal(murmur2(data), kafkaMurmur2(Buffer.from(data)))
      const partition = partitionOf(data, n)
      assert.ok(partition >= 0 && partition < n)
    }),
  )
})
