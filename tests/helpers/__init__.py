"""What the test modules share: constants and the HTTP client (support), payloads, the app's
processes (procs), dead letters and jobs made on the database, the pages' forms (ui), the local
geocoder and lineage servers, and the fault tests' private servers, checks and worker apps."""
