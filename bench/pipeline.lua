-- wrk script for the "pipeline" workload: 16 GETs sent back to back in one write.
-- wrk counts each response, so Requests/sec is responses per second.
local depth = tonumber(os.getenv("BENCH_PIPELINE_DEPTH") or "16")

init = function(args)
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format(nil, "/")
   end
   req = table.concat(r)
end

request = function()
   return req
end
