-- Argo CD health check of truthound.io/ProfileJob (resource.customizations.health.truthound.io_ProfileJob).
-- Reads what the operator writes (operator/src/crd.rs, decide.rs): status.observedGeneration,
-- status.phase (Pending, Running, Merging, Suspended, Succeeded, Failed) and status.conditions
-- (Accepted, Running, Merging, Suspended, Succeeded, Failed, and a kstatus Ready).
--   Healthy      Succeeded (phase, or Ready/Succeeded True)
--   Degraded     Failed (phase, or Failed True): bad data, invalid spec, too many failed tasks,
--                deadline, storage unreachable for too long
--   Suspended    spec.suspend is true
--   Progressing  everything else: not yet seen by the operator, a spec change not yet observed,
--                Pending, Running, Merging, or retrying after a transient error
-- Lua 5.1 (Argo CD runs gopher-lua); tested by scripts/check-deploy.sh with health_test.yaml.
local hs = { status = "Progressing", message = "Waiting for the operator to accept the ProfileJob" }
if obj.status == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type ~= nil then
      conditions[c.type] = c
    end
  end
end

local function is_true(kind)
  return conditions[kind] ~= nil and conditions[kind].status == "True"
end

-- The message of the first of these conditions that has one, after its reason unless the
-- reason only repeats `skip` (or skip is true).
local function said(skip, ...)
  for _, kind in ipairs({ ... }) do
    local c = conditions[kind]
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      if c.reason ~= nil and c.reason ~= "" and skip ~= true and c.reason ~= skip then
        return c.reason .. ": " .. c.message
      end
      return c.message
    end
  end
  return nil
end

local phase = obj.status.phase

if phase == "Failed" or is_true("Failed") then
  hs.status = "Degraded"
  hs.message = said(nil, "Failed", "Ready") or "The ProfileJob failed"
  return hs
end

if phase == "Succeeded" or is_true("Succeeded") or is_true("Ready") then
  hs.status = "Healthy"
  hs.message = said(true, "Succeeded", "Ready") or "The profile is written"
  return hs
end

if phase == "Suspended" or is_true("Suspended") then
  hs.status = "Suspended"
  hs.message = said("Suspended", "Suspended") or "spec.suspend is true"
  return hs
end

-- Pending, Running, Merging, or retrying: say where it is, with the progress when known.
local where = phase or "Pending"
if obj.status.progress ~= nil and obj.status.progress.display ~= nil and obj.status.progress.display ~= "" then
  where = where .. " (" .. obj.status.progress.display .. ")"
end
local note = said(phase, "Ready", "Merging", "Running", "Accepted")
if note ~= nil then
  hs.message = where .. ": " .. note
else
  hs.message = where
end
return hs
