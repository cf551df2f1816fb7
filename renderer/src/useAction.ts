import { useCallback, useState } from 'react';
import { ActionFailure } from './api';

/** Runs control actions and keeps the last failure's message to show in place. */
export function useAction(): { error: string | null; act: (run: () => Promise<unknown>) => Promise<void> } {
  const [error, setError] = useState<string | null>(null);
  const act = useCallback(async (run: () => Promise<unknown>): Promise<void> => {
    setError(null);
    try {
      await run();
    } catch (failure) {
      setError(failure instanceof ActionFailure ? failure.message : String(failure));
    }
  }, []);
  return { error, act };
}
