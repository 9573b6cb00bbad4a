-- A block settles its jobs in a constant number of rows, not several rows per job: settlement
-- commits 100k+ receipts/s only when nothing is written per job but the job's own row (a HOT
-- update). So:
--  * the block row lists its jobs in Merkle order (job_ids) and the fee rate it charged; each
--    job's row names its block (block_height, block_index) and the verdict it settled with
--    (its attempt is the one settled: a settled job is never run again);
--  * a block's postings are one per account and memo (the client's payments, each provider's
--    earnings, the fee), not three per job; a job's own share follows from its receipt's price
--    and the block's fee rate (market::settlement_postings);
--  * a job's SETTLED (and UNSAMPLED) step is the block itself: job_timeline shows it with the
--    stored events, which stop before it.
-- Receipts are written once and never updated.

alter table blocks add column if not exists job_ids bigint[];
alter table blocks add column if not exists fee_bps int;
alter table jobs add column if not exists block_height bigint;
alter table jobs add column if not exists block_index int;
alter table jobs add column if not exists verdict text;

-- Blocks written before: their members come from the receipts that named them.
do $$
begin
  if exists (select 1 from information_schema.columns where table_name = 'receipts' and column_name = 'block_height')
  then
    update blocks b set job_ids = s.ids
    from (select block_height h, array_agg(job_id order by block_index) ids
          from receipts where block_height is not null group by block_height) s
    where s.h = b.height and b.job_ids is null;
    update jobs j set block_height = r.block_height, block_index = r.block_index,
      verdict = coalesce(r.verdict, 'unsampled')
    from receipts r where r.job_id = j.id and r.attempt = j.attempt and r.block_height is not null
      and j.state = 'SETTLED' and j.block_height is null;
    -- Their SETTLED and UNSAMPLED events now come from the block (job_timeline).
    delete from job_events e using jobs j
    where e.job_id = j.id and j.block_height is not null
      and (e.seq = j.seq or (e.seq = j.seq - 1 and e.state = 'UNSAMPLED'));
    alter table receipts drop column block_height, drop column block_index, drop column verdict;
  end if;
end $$;
update blocks set job_ids = '{}' where job_ids is null;
alter table blocks alter column job_ids set not null;

-- Dense pages of job rows leave no room for the new versions of a commit that changes every row
-- on a page (ids are consecutive): at half full, the whole page's next versions fit beside
-- the old ones, so a state change (QUEUED ... SETTLED) stays a HOT update that touches no index.
-- (Pages written before keep their density until rewritten.)
alter table jobs set (fillfactor = 50);

-- One block in one statement, sent without BEGIN and COMMIT (one round trip): the block row,
-- its members' job rows, its postings and the accounts they credit. Returns
--  * the stored hash when a block of that height is stored already (a retry finds its own
--    earlier commit; another hash is a fork), writing nothing;
--  * else the jobs that cannot be settled (not judged at that attempt, or settled already),
--    writing nothing, so the caller sets them aside;
--  * else nothing: the block is written.
-- A block that does not link to the stored block before it is an error: the chain never forks.
create or replace function haca_settle_block(
    b_height bigint, b_prev_hash text, b_batch_root text, b_receipts int, b_total_amount bigint, b_hash text,
    b_signer_key text, b_signature text, b_created_at_us bigint, b_fee_bps int, b_job_ids bigint[],
    b_attempts int[], b_seqs int[], b_verdicts text[], p_accounts text[], p_amounts bigint[], p_memos text[],
    out stored_hash text, out left_out bigint[]) language plpgsql as $$
declare
  settled bigint[];
begin
  select b.block_hash into stored_hash from blocks b where b.height = b_height;
  if found then
    return;
  end if;
  if b_prev_hash is distinct from coalesce((select b.block_hash from blocks b where b.height = b_height - 1),
                                           case when b_height = 0 then repeat('0', 64) end) then
    raise exception 'block % does not link to the stored block %', b_height, b_height - 1;
  end if;
  begin
    insert into blocks (height, prev_hash, batch_root, receipts, total_amount, block_hash, signer_key, signature,
                        created_at, fee_bps, job_ids)
    values (b_height, b_prev_hash, b_batch_root, b_receipts, b_total_amount, b_hash, b_signer_key, b_signature,
            b_created_at_us, b_fee_bps, b_job_ids);
    -- A judged job (its receipt stored with its EXECUTED step) at the attempt the block names.
    with s as (
      update jobs j set state = 'SETTLED', seq = v.seq, updated_at = haca_us_ts(b_created_at_us),
        block_height = b_height, block_index = v.idx - 1, verdict = v.verdict
      from unnest(b_job_ids, b_attempts, b_seqs, b_verdicts) with ordinality as v (job_id, attempt, seq, verdict, idx)
      where j.id = v.job_id and j.attempt = v.attempt and j.seq < v.seq and j.block_height is null
        and j.state in ('EXECUTED', 'VERIFIED', 'UNSAMPLED', 'DISPUTED')
      returning j.id)
    select coalesce(array_agg(s.id), '{}') into settled from s;
    if cardinality(settled) <> cardinality(b_job_ids) then
      left_out := array(select v.job_id from unnest(b_job_ids) as v (job_id) where v.job_id <> all (settled));
      raise sqlstate 'HA001'; -- undoes the block row and the updates
    end if;
    insert into accounts as a (id, balance)
    select v.account, sum(v.amount) from unnest(p_accounts, p_amounts) as v (account, amount) group by v.account
    on conflict (id) do update set balance = a.balance + excluded.balance;
    insert into postings (block_height, job_id, account, amount, memo)
    select b_height, null, v.account, v.amount, v.memo
    from unnest(p_accounts, p_amounts, p_memos) as v (account, amount, memo);
  exception when sqlstate 'HA001' then
    return; -- left_out names them
  end;
end $$;

-- Every step of every job: the stored events, then the block's (the verdict it settled with
-- when nobody recorded one, and SETTLED), at the block's time.
create or replace view job_timeline as
  select job_id, seq, state, detail, attempt, at from job_events
  union all
  select j.id, j.seq - 1, 'UNSAMPLED', 'not drawn for verification', j.attempt,
         to_timestamp(b.created_at::double precision / 1000000)
  from jobs j join blocks b on b.height = j.block_height
  where j.verdict = 'unsampled'
  union all
  select j.id, j.seq, 'SETTLED',
         format('block %s (%s, charged %s)', b.height, j.verdict,
                case when j.verdict = 'mismatch' then 0 else r.price end),
         j.attempt, to_timestamp(b.created_at::double precision / 1000000)
  from jobs j join blocks b on b.height = j.block_height
  join receipts r on r.job_id = j.id and r.attempt = j.attempt;
