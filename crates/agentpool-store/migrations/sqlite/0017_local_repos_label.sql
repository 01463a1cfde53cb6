-- A task on a local repository (a path or a file:// URL) is given the label
-- agentpool/local-repos=true as it is queued, so that only a worker that reads local
-- repositories claims it. Tasks queued before that label existed get it here, in their spec
-- (what the API shows) and in the column the claim matches.
UPDATE tasks
SET spec = json_set(spec, '$.labels."agentpool/local-repos"', 'true'),
    labels = json_set(coalesce(labels, '{}'), '$."agentpool/local-repos"', 'true')
WHERE state = 'queued'
  AND (ltrim(json_extract(spec, '$.repo')) LIKE '/%'
       OR ltrim(json_extract(spec, '$.repo')) LIKE 'file://%');
