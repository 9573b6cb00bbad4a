-- The coordinator's cores write idempotent records (core/records.hpp): a retry after a lost
-- confirmation finds its own earlier commit. Job ids come from the execution core.

-- A job's state changes are numbered per job (seq); the row keeps the newest one applied, so a
-- replayed older transition changes nothing.
alter table jobs add column seq int not null default 0;
alter table jobs add constraint jobs_state_known check (state in ('SUBMITTED', 'QUEUED', 'ASSIGNED', 'EXECUTED',
  'VERIFIED', 'UNSAMPLED', 'DISPUTED', 'SETTLED', 'FAILED', 'EXPIRED', 'CANCELLED'));
-- State changes are frequent; without an index on state they are HOT updates. Recovery and the
-- audit scan the table instead.
drop index if exists jobs_state;

alter table job_events add column seq int;
alter table job_events add column attempt int not null default 0;
create unique index job_events_job_seq on job_events (job_id, seq);

-- A receipt per accepted attempt, with the output the client was sent (STATUS returns it).
alter table receipts drop constraint receipts_pkey;
alter table receipts add primary key (job_id, attempt);
alter table receipts add column output bytea;
alter table receipts add column output_shape text;
alter table receipts add column classes text;  -- JSON array of the arg-max per row

-- Postings made outside a block (the faucet) carry a unique reference, so a retried grant
-- is applied once.
alter table postings add column ref text;
create unique index postings_ref on postings (ref) where ref is not null;

-- The price of the current assignment: a provider's receipt must carry it, also after a
-- coordinator restart.
alter table jobs add column price bigint;

-- The hot path writes every job's row several times and appends an event per transition, in
-- multi-row statements. Keep that cheap: the input (784 bytes and more) lives out of line, so
-- a state change rewrites a small row (and, with room left on the page, a HOT update touches
-- no index); an event row has one index, its (job_id, seq) key. Referential checks on these
-- append-only tables cost a lookup per row; the store writes them only for rows it has
-- checked, and `haca audit` re-checks the ledger.
alter table jobs set (fillfactor = 70, toast_tuple_target = 128);
alter table jobs alter column input set storage external;
alter table job_events drop constraint job_events_job_id_fkey;
alter table job_events drop constraint job_events_pkey;
alter table job_events drop column id;
drop index job_events_job;
alter table postings drop constraint postings_job_id_fkey;
alter table postings drop constraint postings_block_height_fkey;
alter table postings drop constraint postings_account_fkey;
alter table receipts set (fillfactor = 80);
