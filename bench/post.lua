-- wrk script for the "post" workload: POST a 4 KiB body, bench.apps:echo echoes it back.
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
