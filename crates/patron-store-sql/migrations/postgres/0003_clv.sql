-- Predictive CLV (patron fit): accepted model versions, rejected fits, and per-customer
-- predictions of the active generation. See patron_projector::clv.

-- One row per accepted fit; the greatest version is the one in force.
CREATE TABLE clv_models (
    version               bigint           PRIMARY KEY CHECK (version > 0),
    fitted_at             timestamptz      NOT NULL,
    -- The generation fitted on, and its watermark: ages are measured to that day.
    generation            bigint           NOT NULL,
    evaluated_at          timestamptz      NOT NULL,
    customers             bigint           NOT NULL,
    repeat_buyers         bigint           NOT NULL,
    -- BG/NBD, in weeks.
    bgnbd_r               double precision NOT NULL,
    bgnbd_alpha           double precision NOT NULL,
    bgnbd_a               double precision NOT NULL,
    bgnbd_b               double precision NOT NULL,
    bgnbd_log_likelihood  double precision NOT NULL,
    -- Gamma-Gamma (gamma in minor units); NULL when not fitted (spend_note says why).
    gg_p                  double precision,
    gg_q                  double precision,
    gg_gamma              double precision,
    spend_note            text,
    horizon_days          integer          NOT NULL,
    annual_discount_rate  double precision NOT NULL
);

-- Fits that were rejected, with the reason; they change nothing else.
CREATE TABLE clv_fit_failures (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempted_at timestamptz NOT NULL,
    generation   bigint,
    evaluated_at timestamptz,
    customers    bigint      NOT NULL,
    reason       text        NOT NULL
);

-- Predictions as of the model's evaluation time, for the generation fitted on. Probabilities and
-- expected counts are floating point; money is integer minor units of the reporting currency.
CREATE TABLE clv_predictions (
    generation             bigint           NOT NULL,
    customer_id            text             NOT NULL,
    model_version          bigint           NOT NULL REFERENCES clv_models (version),
    p_alive                double precision NOT NULL,
    expected_purchases     double precision NOT NULL,
    expected_spend_minor   bigint,
    expected_revenue_minor bigint,
    clv_minor              bigint,
    PRIMARY KEY (generation, customer_id)
);
