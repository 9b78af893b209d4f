import { useEffect, useState } from 'react';

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
