/** Waiting on work with a bound: a time limit, or a signal that ends the wait (the work goes on by itself). */

/** `promise`'s value, or `late` once `ms` have passed without one. */
export function within<T>(promise: Promise<T>, ms: number, late: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<T>((resolve) => (timer = setTimeout(() => resolve(late), Math.max(0, ms))));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Whether `work` settled (either way) within `ms`. */
export function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  return within(work.then(() => true, () => true), ms, false);
}

/**
 * `work`'s outcome, or a rejection with `reason()` (the signal's reason by default) as soon as
 * `signal` aborts; `work` then ends on its own, its outcome ignored.
 */
export function rejectOnAbort<T>(work: Promise<T>, signal: AbortSignal, reason: () => unknown = () => signal.reason): Promise<T> {
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.reject(reason());
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(reason());
    signal.addEventListener("abort", abort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}
