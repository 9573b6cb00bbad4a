-- The store's hot writes as functions, so that a commit of jobs, transitions and receipts is
-- one statement: sent alone (autocommit) it is one round trip to the server, where BEGIN, each
-- statement and COMMIT were one each. Statements inside a function see the rows written by the
-- statements before them (a job inserted and expired in the same commit). The rows travel as
-- arrays, one per column (db/store.cpp); every write is idempotent (core/records.hpp).

create function haca_us_ts(us bigint) returns timestamptz language sql stable
  return 'epoch'::timestamptz + us * interval '1 microsecond';

-- Jobs, each with its SUBMITTED and QUEUED events. A job assigned in the step that admitted it
-- (a non-empty provider key) goes in as ASSIGNED with that event at seq 2: one row version
-- fewer on the path to its ACK and JOB. Returns how many rows went in (fewer: some request ids
-- were stored before, by this commit's earlier try or by another job).
create function haca_insert_jobs(ids bigint[], client_ids text[], request_ids text[], models text[],
    input_hashes text[], inputs bytea[], shapes text[], tiers text[], max_prices bigint[], deadlines_us bigint[],
    submitted_times_us bigint[], provider_keys text[], prices bigint[], attempts int[], details text[],
    assigned_times_us bigint[]) returns bigint language plpgsql as $$
declare
  inserted bigint;
begin
  with v as (select * from unnest(ids, client_ids, request_ids, models, input_hashes, inputs, shapes, tiers,
                                  max_prices, deadlines_us, submitted_times_us, provider_keys, prices, attempts,
                                  details, assigned_times_us)
               as v (id, client_id, request_id, model, input_hash, input, shape, tier, max_price, deadline_us,
                     submitted_us, provider_key, price, attempt, detail, assigned_us)),
  ins as (insert into jobs (id, client_id, client_req_id, model_hash, input_hash, input, input_shape, tier, max_price,
                            deadline, state, attempt, seq, provider_key, price, submitted_at, updated_at)
          select id, client_id, request_id, model, input_hash, input, shape, tier, max_price,
                 case when deadline_us = 0 then null else haca_us_ts(deadline_us) end,
                 case when provider_key = '' then 'QUEUED' else 'ASSIGNED' end, attempt,
                 case when provider_key = '' then 1 else 2 end, nullif(provider_key, ''),
                 case when provider_key = '' then null else price end, haca_us_ts(submitted_us),
                 haca_us_ts(greatest(submitted_us, assigned_us))
          from v on conflict do nothing returning id, submitted_at),
  ev as (insert into job_events (job_id, seq, state, detail, attempt, at)
         select id, 0, 'SUBMITTED', '', 0, submitted_at from ins union all
         select id, 1, 'QUEUED', '', 0, submitted_at from ins union all
         select v.id, 2, 'ASSIGNED', v.detail, v.attempt, haca_us_ts(v.assigned_us)
         from ins join v on v.id = ins.id where v.provider_key <> '' on conflict do nothing)
  select count(*) into inserted from ins;
  return inserted;
end $$;

-- (Parameters are named apart from the columns: PL/pgSQL would not know which one a name means.)

-- A transition is an event (once per job and seq) and, when newer than the row's, the row.
create function haca_transitions(job_ids bigint[], seqs int[], states text[], attempts int[], provider_keys text[],
    prices bigint[], details text[], times_us bigint[]) returns void language plpgsql as $$
begin
  with v as (select * from unnest(job_ids, seqs, states, attempts, provider_keys, prices, details, times_us)
               as v (job_id, seq, state, attempt, provider_key, price, detail, at_us)),
  ev as (insert into job_events (job_id, seq, state, detail, attempt, at)
         select v.job_id, v.seq, v.state, v.detail, v.attempt, haca_us_ts(v.at_us)
         from v join jobs j on j.id = v.job_id on conflict do nothing),
  newest as (select distinct on (job_id) * from v order by job_id, seq desc)
  update jobs j set state = n.state, attempt = n.attempt, seq = n.seq,
    provider_key = case when n.provider_key = '' then j.provider_key else n.provider_key end,
    price = case when n.state = 'ASSIGNED' then n.price else j.price end, updated_at = haca_us_ts(n.at_us)
  from newest n where j.id = n.job_id and j.seq < n.seq;
end $$;

-- One commit of the execution core's records: jobs, then transitions, then the receipts of the
-- EXECUTED ones (a receipt's job must exist). Returns haca_insert_jobs's count.
create function haca_write(
    ids bigint[], client_ids text[], request_ids text[], models text[], input_hashes text[], inputs bytea[],
    shapes text[], tiers text[], max_prices bigint[], deadlines_us bigint[], submitted_times_us bigint[],
    first_keys text[], first_prices bigint[], first_attempts int[], first_details text[], assigned_times_us bigint[],
    t_job_ids bigint[], t_seqs int[], t_states text[], t_attempts int[], t_keys text[], t_prices bigint[],
    t_details text[], t_at_us bigint[],
    r_job_ids bigint[], r_attempts int[], r_hashes text[], r_models text[], r_inputs text[], r_outputs text[],
    r_traces text[], r_keys text[], r_prices bigint[], r_started bigint[], r_finished bigint[], r_signatures text[],
    r_output_bytes bytea[], r_shapes text[], r_classes text[]) returns bigint language plpgsql as $$
declare
  inserted bigint := 0;
begin
  if cardinality(ids) > 0 then
    inserted := haca_insert_jobs(ids, client_ids, request_ids, models, input_hashes, inputs, shapes, tiers,
                                 max_prices, deadlines_us, submitted_times_us, first_keys, first_prices, first_attempts,
                                 first_details, assigned_times_us);
  end if;
  if cardinality(t_job_ids) > 0 then
    perform haca_transitions(t_job_ids, t_seqs, t_states, t_attempts, t_keys, t_prices, t_details, t_at_us);
  end if;
  if cardinality(r_job_ids) > 0 then
    insert into receipts (job_id, attempt, receipt_hash, model_hash, input_hash, output_hash, trace_root,
                          provider_key, price, started_at, finished_at, signature, output, output_shape, classes)
    select * from unnest(r_job_ids, r_attempts, r_hashes, r_models, r_inputs, r_outputs, r_traces, r_keys, r_prices,
                         r_started, r_finished, r_signatures, r_output_bytes, r_shapes, r_classes)
    on conflict do nothing;
  end if;
  return inserted;
end $$;
