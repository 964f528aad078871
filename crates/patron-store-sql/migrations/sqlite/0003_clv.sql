-- Predictive CLV (patron fit): accepted model versions, rejected fits, and per-customer
-- predictions of the active generation. See patron_projector::clv. Timestamps are RFC 3339 text.

-- One row per accepted fit; the greatest version is the one in force.
CREATE TABLE clv_models (
    version               INTEGER PRIMARY KEY CHECK (version > 0),
    fitted_at             TEXT    NOT NULL,
    -- The generation fitted on, and its watermark: ages are measured to that day.
    generation            INTEGER NOT NULL,
    evaluated_at          TEXT    NOT NULL,
    customers             INTEGER NOT NULL,
    repeat_buyers         INTEGER NOT NULL,
    -- BG/NBD, in weeks.
    bgnbd_r               REAL    NOT NULL,
    bgnbd_alpha           REAL    NOT NULL,
    bgnbd_a               REAL    NOT NULL,
    bgnbd_b               REAL    NOT NULL,
    bgnbd_log_likelihood  REAL    NOT NULL,
    -- Gamma-Gamma (gamma in minor units); NULL when not fitted (spend_note says why).
    gg_p                  REAL,
    gg_q                  REAL,
    gg_gamma              REAL,
    spend_note            TEXT,
    horizon_days          INTEGER NOT NULL,
    annual_discount_rate  REAL    NOT NULL
);

-- Fits that were rejected, with the reason; they change nothing else.
CREATE TABLE clv_fit_failures (
    id           INTEGER PRIMARY KEY,
    attempted_at TEXT    NOT NULL,
    generation   INTEGER,
    evaluated_at TEXT,
    customers    INTEGER NOT NULL,
    reason       TEXT    NOT NULL
);

-- Predictions as of the model's evaluation time, for the generation fitted on. Probabilities and
-- expected counts are floating point; money is integer minor units of the reporting currency.
CREATE TABLE clv_predictions (
    generation             INTEGER NOT NULL,
    customer_id            TEXT    NOT NULL,
    model_version          INTEGER NOT NULL REFERENCES clv_models (version),
    p_alive                REAL    NOT NULL,
    expected_purchases     REAL    NOT NULL,
    expected_spend_minor   INTEGER,
    expected_revenue_minor INTEGER,
    clv_minor              INTEGER,
    PRIMARY KEY (generation, customer_id)
);
