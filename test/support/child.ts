/**
 * The environment for a helper process a test spawns: ours, plus `extra`, without the test
 * runner's NODE_TEST_CONTEXT (with it, a child Node process takes itself for a test file and its
 * output goes to the runner's channel instead of its stdout).
 */
export const childEnv = (extra: Record<string, string>): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra }
  delete env.NODE_TEST_CONTEXT
  return env
}
