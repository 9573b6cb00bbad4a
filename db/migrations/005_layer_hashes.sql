-- A provider's trace layer hashes, as its DONE revealed them (hex, comma-separated; their
-- Merkle root is the trace root its receipt signs), so that a dispute over a job executed before
-- a coordinator restart is still bisected to one layer. haca_write takes them as one more array.
alter table receipts add column if not exists layer_hashes text;

drop function if exists haca_write(bigint[], text[], text[], text[], text[], bytea[], text[], text[], bigint[], bigint[],
                                   bigint[], text[], bigint[], int[], text[], bigint[], bigint[], int[], text[], int[],
                                   text[], bigint[], text[], bigint[], bigint[], int[], text[], text[], text[], text[],
                                   text[], text[], bigint[], bigint[], bigint[], text[], bytea[], text[], text[]);

create function haca_write(
    ids bigint[], client_ids text[], request_ids text[], models text[], input_hashes text[], inputs bytea[],
    shapes text[], tiers text[], max_prices bigint[], deadlines_us bigint[], submitted_times_us bigint[],
    first_keys text[], first_prices bigint[], first_attempts int[], first_details text[], assigned_times_us bigint[],
    t_job_ids bigint[], t_seqs int[], t_states text[], t_attempts int[], t_keys text[], t_prices bigint[],
    t_details text[], t_at_us bigint[],
    r_job_ids bigint[], r_attempts int[], r_hashes text[], r_models text[], r_inputs text[], r_outputs text[],
    r_traces text[], r_keys text[], r_prices bigint[], r_started bigint[], r_finished bigint[], r_signatures text[],
    r_output_bytes bytea[], r_shapes text[], r_classes text[], r_layer_hashes text[]) returns bigint language plpgsql as $$
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
                          provider_key, price, started_at, finished_at, signature, output, output_shape, classes,
                          layer_hashes)
    select * from unnest(r_job_ids, r_attempts, r_hashes, r_models, r_inputs, r_outputs, r_traces, r_keys, r_prices,
                         r_started, r_finished, r_signatures, r_output_bytes, r_shapes, r_classes,
                         r_layer_hashes)
    on conflict do nothing;
  end if;
  return inserted;
end $$;
