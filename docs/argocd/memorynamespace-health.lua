-- Argo CD health check for memory.somafractal.io/MemoryNamespace.
-- Install (argocd-cm):
--   resource.customizations.health.memory.somafractal.io_MemoryNamespace: |
--     <this file>
-- A status written for an older generation says nothing about the current spec:
-- until status.observedGeneration (and the Ready condition's) reaches
-- metadata.generation the resource is Progressing, whatever Ready says.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation or 0
local observed = obj.status.observedGeneration or 0
if observed < generation then
  hs.message = "The operator has not observed generation " .. generation .. " yet"
  return hs
end
local ready = nil
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return hs
end
if (ready.observedGeneration or observed) < generation then
  hs.message = "Ready was computed for an older generation"
  return hs
end
if ready.status == "True" then
  return {status = "Healthy", message = ready.message or ready.reason or "Ready"}
end
-- Reasons that mean "not there yet" rather than broken (docs/OPERATOR.md): a
-- rollout in progress. Everything else False is Degraded.
local converging = {Reconciling = true, DeploymentNotAvailable = true}
if ready.status == "Unknown" or converging[ready.reason or ""] then
  return {status = "Progressing", message = (ready.reason or "") .. ": " .. (ready.message or "")}
end
return {status = "Degraded", message = (ready.reason or "") .. ": " .. (ready.message or "")}
