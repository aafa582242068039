/**
 * Output of the operator commands: readable tables by default, JSON with `--json` (one object,
 * or one per line for a list), so that scripts keep a stable format and people get columns.
 */

export type Column<T> = {
  readonly title: string
  readonly value: (row: T) => unknown
  /** Longest cell shown; longer values end with "…" (default 48). */
  readonly max?: number
  readonly align?: 'left' | 'right'
}

const text = (v: unknown): string => {
  if (v === null || v === undefined) return '-'
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  return JSON.stringify(v)
}

/** One line per row, no control characters (event data is user input). */
const clean = (s: string): string => s.replace(/[\u0000-\u001f\u007f]+/g, ' ')

const cut = (s: string, max: number): string => (s.length > max ? `${s.slice(0, max - 1)}…` : s)

/**
 * Rows as an aligned table with a header line; `(none)` when there are none. `fixed`: every
 * column as wide as its `max` (rows printed one at a time line up).
 */
export const table = <T>(
  rows: readonly T[],
  columns: readonly Column<T>[],
  options: { readonly fixed?: boolean } = {},
): string => {
  if (rows.length === 0) return '(none)\n'
  const cells = rows.map((r) => columns.map((c) => cut(clean(text(c.value(r))), c.max ?? 48)))
  const widths = columns.map((c, i) =>
    options.fixed === true
      ? Math.max(c.title.length, c.max ?? 48)
      : Math.max(c.title.length, ...cells.map((row) => (row[i] as string).length)),
  )
  const line = (values: readonly string[]) =>
    values
      .map((v, i) =>
        columns[i]?.align === 'right'
          ? v.padStart(widths[i] as number)
          : v.padEnd(widths[i] as number),
      )
      .join('  ')
      .trimEnd()
  return `${[line(columns.map((c) => c.title)), ...cells.map(line)].join('\n')}\n`
}

/** `name  value` lines for one object's fields, nested objects as JSON. */
export const fields = (o: Readonly<Record<string, unknown>>): string => {
  const entries = Object.entries(o)
  const width = Math.max(0, ...entries.map(([k]) => k.length))
  return `${entries.map(([k, v]) => `${k.padEnd(width)}  ${clean(text(v))}`).join('\n')}\n`
}

export const printJson = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value)}\n`)
}
