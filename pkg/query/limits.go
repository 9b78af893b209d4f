package query

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

// Config bounds every query, so that no query, however written, can take
// the process down with it: its text is measured before Prometheus'
// recursive parser sees it, its steps are counted before the engine sizes
// them, its samples, time and the number running at once are capped. It is
// the top-level query: section of the configuration.
type Config struct {
	// Timeout bounds one query from the moment it gets a slot: parsing,
	// evaluation and, for the node graph and the RED table, all their reads.
	Timeout time.Duration `yaml:"timeout"`
	// MaxSamples bounds the samples one PromQL query may hold in memory at
	// once (a float sample costs ~16 B plus the engine's overhead), and the
	// figures the node graph holds (edges × series per edge). The
	// configuration sizes it from memory_limit unless it is set.
	MaxSamples int `yaml:"max_samples"`
	// LookbackDelta is how far back an instant selector looks.
	LookbackDelta time.Duration `yaml:"lookback_delta"`
	// MaxQueryLength is the longest expression accepted, in bytes; it is
	// checked before anything else looks at the text.
	MaxQueryLength int `yaml:"max_query_length"`
	// MaxDepth is the deepest nesting accepted, checked on the tokens before
	// parsing, since Prometheus' parser and engine recurse once per level:
	// every open bracket, parenthesis or brace is a level, and so is every
	// operator, because a+b+c nests without brackets.
	MaxDepth int `yaml:"max_depth"`
	// MaxSteps caps the points per series of a range query, as
	// Prometheus' 11 000 does.
	MaxSteps int `yaml:"max_steps"`
	// MaxSubquerySteps caps the evaluation steps of every subquery, which
	// the engine allocates (about 40 B each) before MaxSamples applies:
	// [365d:1ms] would take 31.5 G steps. It is higher than MaxSteps so
	// that what Prometheus answers, like [1d:1s], still runs; MaxSamples
	// bounds what the steps then hold.
	MaxSubquerySteps int `yaml:"max_subquery_steps"`
	// MaxConcurrency is how many queries run at once; the others wait.
	MaxConcurrency int `yaml:"max_concurrency"`
	// QueueTimeout is how long a query waits for a slot before it is
	// refused with 503 (errorType unavailable); 0 refuses at once.
	QueueTimeout time.Duration `yaml:"queue_timeout"`
}

// BytesPerSample is what a sample held by a query costs: a 16-byte point,
// its share of the series it is in, and the copy that detaches a result
// from the engine's pooled memory. The process's memory budget divides
// the queries' share by it to size max_samples.
const BytesPerSample = 48

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Timeout: 2 * time.Minute,
		// A tenth of Prometheus' 50 M: ~80 MB of samples, a few hundred MB
		// with the engine's overhead, per query; 8 queries at once then fit
		// in the memory of a process that also ingests. Still 450 series at
		// 11 000 points, or 5 000 series over a day at 15 s.
		MaxSamples:     5_000_000,
		LookbackDelta:  5 * time.Minute,
		MaxQueryLength: 64 << 10,
		MaxDepth:       200,
		// Prometheus' cap on points per series of a range query.
		MaxSteps:         11_000,
		MaxSubquerySteps: 1_000_000,
		MaxConcurrency:   8,
		QueueTimeout:     10 * time.Second,
	}
}

// Validate checks the config; errors name the key under prefix.
func (c *Config) Validate(prefix string) error {
	switch {
	case c.Timeout <= 0:
		return fmt.Errorf("%s.timeout: must be positive, got %s", prefix, c.Timeout)
	case c.MaxSamples <= 0:
		return fmt.Errorf("%s.max_samples: must be positive, got %d", prefix, c.MaxSamples)
	case c.LookbackDelta <= 0:
		return fmt.Errorf("%s.lookback_delta: must be positive, got %s", prefix, c.LookbackDelta)
	case c.MaxQueryLength <= 0:
		return fmt.Errorf("%s.max_query_length: must be positive, got %d", prefix, c.MaxQueryLength)
	case c.MaxDepth <= 0:
		return fmt.Errorf("%s.max_depth: must be positive, got %d", prefix, c.MaxDepth)
	case c.MaxSteps <= 0:
		return fmt.Errorf("%s.max_steps: must be positive, got %d", prefix, c.MaxSteps)
	case c.MaxSubquerySteps <= 0:
		return fmt.Errorf("%s.max_subquery_steps: must be positive, got %d", prefix, c.MaxSubquerySteps)
	case c.MaxConcurrency <= 0:
		return fmt.Errorf("%s.max_concurrency: must be positive, got %d", prefix, c.MaxConcurrency)
	case c.QueueTimeout < 0:
		return fmt.Errorf("%s.queue_timeout: must not be negative, got %s", prefix, c.QueueTimeout)
	}
	return nil
}

// Reasons for refusing a query, as self-metric label values.
const (
	ReasonTooLong        = "too_long"
	ReasonTooDeep        = "too_deep"
	ReasonTooManySteps   = "too_many_steps"
	ReasonTooManySamples = "too_many_samples"
	ReasonQueueTimeout   = "queue_timeout"
	ReasonTimeout        = "timeout"
)

var (
	queriesRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spangraph_query_rejected_total",
		Help: "Queries refused or stopped by a query.* limit, by reason.",
	}, []string{"reason"})
	queriesInflight = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spangraph_query_inflight",
		Help: "Queries holding one of the query.max_concurrency slots.",
	})
	queueWait = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "spangraph_query_queue_wait_seconds",
		Help:    "How long admitted queries waited for a slot.",
		Buckets: []float64{0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30},
	})
)

func init() {
	// Every reason shows from the start, so that rate() sees the first one.
	for _, r := range []string{ReasonTooLong, ReasonTooDeep, ReasonTooManySteps, ReasonTooManySamples, ReasonQueueTimeout, ReasonTimeout} {
		queriesRejected.WithLabelValues(r)
	}
}

// refuse is a query error caused by a limit; finish counts it.
func refuse(typ, reason, format string, args ...any) *Error {
	return &Error{Type: typ, Err: fmt.Errorf(format, args...), reason: reason}
}

// errTimeout is the cause of the deadline begin sets, which tells a query
// stopped by query.timeout from one whose caller gave up.
var errTimeout = errors.New("query.timeout reached")

// begin admits a query: it waits up to queue_timeout for one of the
// max_concurrency slots, then bounds the query by timeout. done releases
// the slot.
func (q *Querier) begin(ctx context.Context) (_ context.Context, done func(), _ error) {
	t0 := time.Now()
	select {
	case q.slots <- struct{}{}:
	default:
		timer := time.NewTimer(q.cfg.QueueTimeout)
		defer timer.Stop()
		select {
		case q.slots <- struct{}{}:
		case <-timer.C:
			return ctx, nil, refuse(ErrorUnavailable, ReasonQueueTimeout,
				"too many queries at once: no slot of query.max_concurrency (%d) came free within query.queue_timeout (%s); retry later",
				q.cfg.MaxConcurrency, q.cfg.QueueTimeout)
		case <-ctx.Done():
			return ctx, nil, classify(ctx.Err())
		}
	}
	queueWait.Observe(time.Since(t0).Seconds())
	queriesInflight.Inc()
	ctx, cancel := context.WithTimeoutCause(ctx, q.cfg.Timeout, errTimeout)
	return ctx, func() {
		cancel()
		queriesInflight.Dec()
		<-q.slots
	}, nil
}

// finish gives every error leaving the package its errorType, names the
// limit that stopped a query and counts the refusal.
func (q *Querier) finish(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var qe *Error
	if !errors.As(classify(err), &qe) {
		return err
	}
	switch {
	case qe.reason == ReasonTooManySamples && !strings.Contains(qe.Error(), "query.max_samples"):
		qe = &Error{Type: qe.Type, reason: qe.reason,
			Err: fmt.Errorf("%w: over query.max_samples (%d)", qe.Err, q.cfg.MaxSamples)}
	case qe.reason == ReasonTimeout && errors.Is(context.Cause(ctx), errTimeout):
		qe = &Error{Type: qe.Type, reason: qe.reason,
			Err: fmt.Errorf("%w: the query ran longer than query.timeout (%s)", qe.Err, q.cfg.Timeout)}
	}
	if qe.reason != "" {
		queriesRejected.WithLabelValues(qe.reason).Inc()
	}
	return qe
}

// checkText refuses an expression that is too long or nests too deeply
// before any recursive code sees it. The depth is counted on Prometheus'
// own lexer, which is a loop, so strings, comments and durations are read
// exactly as the parser reads them.
func (q *Querier) checkText(expr string) error {
	if len(expr) > q.cfg.MaxQueryLength {
		return refuse(ErrorBadData, ReasonTooLong, "the query is %d bytes long, over query.max_query_length (%d)",
			len(expr), q.cfg.MaxQueryLength)
	}
	if d := nesting(expr); d > q.cfg.MaxDepth {
		return refuse(ErrorBadData, ReasonTooDeep, "the query nests %d levels deep, over query.max_depth (%d)", d, q.cfg.MaxDepth)
	}
	return nil
}

// nesting bounds the depth of the syntax tree of expr from above: one
// level per open bracket, plus one per operator inside each open bracket,
// since the parser nests a+b+c (and - - x) one operator per level. Label
// matchers inside braces (=~, !=) nest nothing. A lexing error stops the
// count: the parser stops at the same token.
func nesting(expr string) int {
	lex := parser.Lex(expr)
	// ops[i] counts the operators at bracket level i.
	ops := []int{0}
	depth, deepest, braces := 0, 0, 0
	var it parser.Item
	for {
		lex.NextItem(&it)
		switch it.Typ {
		case parser.EOF, parser.ERROR:
			return deepest
		case parser.LEFT_PAREN, parser.LEFT_BRACKET, parser.LEFT_BRACE:
			if it.Typ == parser.LEFT_BRACE {
				braces++
			}
			ops = append(ops, 0)
			depth++
		case parser.RIGHT_PAREN, parser.RIGHT_BRACKET, parser.RIGHT_BRACE:
			if it.Typ == parser.RIGHT_BRACE && braces > 0 {
				braces--
			}
			if len(ops) > 1 {
				depth -= 1 + ops[len(ops)-1]
				ops = ops[:len(ops)-1]
			}
		default:
			if it.Typ.IsOperator() && it.Typ != parser.AT && braces == 0 {
				ops[len(ops)-1]++
				depth++
			}
		}
		deepest = max(deepest, depth)
	}
}

// span is the evaluation grid of one evaluator of the engine, in ms.
type span struct{ start, end, interval int64 }

func (s span) steps() int64 {
	if s.end < s.start {
		return 0
	}
	// A step under 1 ms is 0 ms to the engine, which then evaluates every ms.
	return (s.end-s.start)/max(s.interval, 1) + 1
}

// child is the grid on which the engine evaluates what is under n: a
// subquery runs once over the whole parent grid widened by its range, at
// its own step (so nested subqueries add up their ranges rather than
// multiply their steps); a step-invariant part runs at the first step.
// It follows promql's subqueryEvaluationTimes.
func (s span) child(n parser.Node) span {
	switch n := n.(type) {
	case *parser.StepInvariantExpr:
		return span{s.start, s.start, s.interval}
	case *parser.SubqueryExpr:
		step := n.Step.Milliseconds()
		if step <= 0 {
			step = noStepSubqueryInterval.Milliseconds()
		}
		offset, rng := n.Offset.Milliseconds(), n.Range.Milliseconds()
		end := s.end
		if n.Timestamp != nil {
			end = s.start
		} else if s.interval > 0 {
			end = s.start + (end-s.start)/s.interval*s.interval
		}
		start := step * ((s.start - offset - rng) / step)
		if start <= s.start-offset-rng {
			start += step
		}
		return span{start, end - offset, step}
	}
	return s
}

// checkSteps refuses a query with a subquery the engine would evaluate
// over more than max_subquery_steps steps: the engine allocates per step before it
// counts a single sample, so [365d:1ms] would exhaust memory in
// milliseconds. outer is the query's own grid.
func (q *Querier) checkSteps(qry promql.Query, outer span) error {
	stmt, ok := qry.Statement().(*parser.EvalStmt)
	if !ok {
		return nil
	}
	var err error
	parser.Inspect(stmt.Expr, func(node parser.Node, path []parser.Node) error {
		sq, ok := node.(*parser.SubqueryExpr)
		if !ok {
			return nil
		}
		if sq.Step > 0 && sq.Step < time.Millisecond {
			// The engine's steps are whole milliseconds; it would divide by 0.
			err = badData("subquery %s: the step must be at least 1ms", subqueryText(qry.String(), sq))
			return err
		}
		s := outer
		for _, n := range path {
			s = s.child(n)
		}
		s = s.child(sq)
		if n := s.steps(); n > int64(q.cfg.MaxSubquerySteps) {
			err = refuse(ErrorBadData, ReasonTooManySteps, "subquery %s would take %d steps, over query.max_subquery_steps (%d)",
				subqueryText(qry.String(), sq), n, q.cfg.MaxSubquerySteps)
		}
		return err
	})
	return err
}

// subqueryText is the [range:step] of sq as written, or as Prometheus
// prints it when the text cannot be found.
func subqueryText(expr string, sq *parser.SubqueryExpr) string {
	from, to := int(sq.Expr.PositionRange().End), int(sq.EndPos)
	if 0 <= from && from < to && to <= len(expr) {
		// An offset or @ may follow the brackets.
		t := expr[from:to]
		if i, j := strings.IndexByte(t, '['), strings.LastIndexByte(t, ']'); 0 <= i && i < j {
			return t[i : j+1]
		}
	}
	step := "" // Prometheus prints [5m:] for the default step.
	if sq.Step > 0 {
		step = model.Duration(sq.Step).String()
	}
	return "[" + model.Duration(sq.Range).String() + ":" + step + "]"
}

// checkRangeSteps is Prometheus' own check on a range query's points, with
// its message, over max_steps instead of a fixed 11 000.
func (q *Querier) checkRangeSteps(start, end time.Time, step time.Duration) error {
	if end.Sub(start)/step > time.Duration(q.cfg.MaxSteps) {
		return refuse(ErrorBadData, ReasonTooManySteps,
			"exceeded maximum resolution of %s points per timeseries (query.max_steps). Try decreasing the query resolution (?step=XX)",
			thousands(q.cfg.MaxSteps))
	}
	return nil
}

// thousands formats n as Prometheus' message does: 11,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
