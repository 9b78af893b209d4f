import { useEffect, useMemo, useRef, useState } from 'react';

import { cachingProvider, Completions, getCompletions } from '../completion';
import { DataSource } from '../datasource';

/** The services the datasource's tenant has, for pickers; loading and error say how the lookup went. */
export function useServices(datasource: DataSource) {
  const [services, setServices] = useState<string[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string>();

  useEffect(() => {
    let current = true;
    datasource
      .serviceNames()
      .then(
        (names) => current && setServices(names),
        (err: Error) => current && setError(`Could not load services: ${err.message}`)
      )
      .finally(() => current && setLoading(false));
    return () => {
      current = false;
    };
  }, [datasource]);

  return { services, loading, error };
}

/**
 * PromQL completions for the text at an offset: suggest looks them up (metric names, labels and values
 * from the datasource, cached), close drops them; active is the highlighted item.
 */
export function useCompletions(datasource: DataSource) {
  const provider = useMemo(() => cachingProvider(datasource), [datasource]);
  const [completions, setCompletions] = useState<Completions>();
  const [active, setActive] = useState(0);
  // Only the newest lookup may show its suggestions; older ones resolve for text that is gone.
  const latestLookup = useRef(0);

  const suggest = (text: string, offset: number) => {
    const id = ++latestLookup.current;
    const show = (result?: Completions) => {
      if (id === latestLookup.current) {
        setCompletions(result);
        setActive(0);
      }
    };
    // A failed lookup only means no suggestions; the query itself still runs and reports errors.
    getCompletions(text, offset, provider).then(show, () => show(undefined));
  };

  const close = () => {
    latestLookup.current++;
    setCompletions(undefined);
  };

  return { completions, active, setActive, suggest, close };
}
