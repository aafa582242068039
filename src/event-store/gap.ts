/**
 * A gap marker: what a sequence slot holds when its append was given up (the body could not be
 * written). Written create-only at the event's key, so the slot holds either the event or the
 * marker, never both: a stalled writer that comes back finds the marker and reports failure.
 * Readers skip gaps; they are never published.
 */
export type GapMarker = {
  readonly gap: true
  readonly event_id: string
  readonly aggregate_type: string
  readonly aggregate_id: string
  readonly sequence_number: number
  readonly reason: string
  readonly marked_at: string
}

export const isGapMarker = (value: unknown): value is GapMarker =>
  typeof value === 'object' && value !== null && (value as { gap?: unknown }).gap === true
