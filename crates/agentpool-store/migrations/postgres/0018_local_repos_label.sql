-- A task on a local repository (a path or a file:// URL) is given the label
-- agentpool/local-repos=true as it is queued, so that only a worker that reads local
-- repositories claims it. Tasks queued before that label existed get it here, in their spec
-- (what the API shows) and in the column the claim matches.
UPDATE tasks
SET spec = jsonb_set(spec::jsonb, '{labels}',
        coalesce(spec::jsonb -> 'labels', '{}') || '{"agentpool/local-repos": "true"}')::text,
    labels = coalesce(labels, '{}') || '{"agentpool/local-repos": "true"}'
WHERE state = 'queued'
  AND (ltrim(spec::jsonb ->> 'repo') LIKE '/%'
       OR ltrim(spec::jsonb ->> 'repo') ILIKE 'file://%');
