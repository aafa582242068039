/**
 * A gap marker: what a segment's key holds when its group commit was given up (the segment was
 * never written within the writers' bound). Written create-only at the segment's key, so the key
 * holds either the segment or the marker, never both: a stalled writer that comes back finds the
 * marker and reports failure. The sequences reserved for that segment hold no event; readers and
 * the publisher skip them, and the event ids may be appended again.
 */
export type GapMarker = {
  readonly gap: true
  readonly segment: string
  readonly reason: string
  readonly marked_at: string
}

export const isGapMarker = (value: unknown): value is GapMarker =>
  typeof value === 'object' && value !== null && (value as { gap?: unknown }).gap === true
