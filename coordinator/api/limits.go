package api

import (
	"crypto/sha256"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// KeyLimits bound what one client may ask of the server: requests per
// second (with a burst) and requests in flight. A client is its API key
// when keys are configured, else its address. Zero values turn a limit off.
type KeyLimits struct {
	Rate        float64 // requests per second
	Burst       int
	Concurrency int
}

// maxTrackedClients bounds the limiter table; idle entries are dropped
// first, so an attacker rotating addresses cannot grow it without end.
const maxTrackedClients = 10000

type clientLimit struct {
	lim      *rate.Limiter
	inFlight int
	lastSeen time.Time
}

// limiter enforces KeyLimits per client.
type limiter struct {
	cfg     KeyLimits
	mu      sync.Mutex
	clients map[[sha256.Size]byte]*clientLimit
}

func newLimiter(cfg KeyLimits) *limiter {
	return &limiter{cfg: cfg, clients: map[[sha256.Size]byte]*clientLimit{}}
}

func (l *limiter) enabled() bool { return l.cfg.Rate > 0 || l.cfg.Concurrency > 0 }

// clientKey names the caller: a digest of its API key, or of its address.
func clientKey(c echo.Context) [sha256.Size]byte {
	if key := apiKey(c.Request().Header); key != "" {
		return sha256.Sum256([]byte("key:" + key))
	}
	return sha256.Sum256([]byte("addr:" + c.RealIP()))
}

// acquire admits a request or returns the 429 to send; release must be
// called when an admitted request ends.
func (l *limiter) acquire(id [sha256.Size]byte, now time.Time) (release func(), refusal *Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cl := l.clients[id]
	if cl == nil {
		if len(l.clients) >= maxTrackedClients {
			l.evictLocked(now)
		}
		cl = &clientLimit{}
		if l.cfg.Rate > 0 {
			cl.lim = rate.NewLimiter(rate.Limit(l.cfg.Rate), max(l.cfg.Burst, 1))
		}
		l.clients[id] = cl
	}
	cl.lastSeen = now
	if l.cfg.Concurrency > 0 && cl.inFlight >= l.cfg.Concurrency {
		return nil, &Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "too_many_concurrent_requests",
			Message: fmt.Sprintf("Too many concurrent requests: at most %d at a time per API key.", l.cfg.Concurrency), RetryAfter: 1}
	}
	if cl.lim != nil {
		r := cl.lim.ReserveN(now, 1)
		if d := r.DelayFrom(now); !r.OK() || d > 0 {
			r.CancelAt(now)
			secs := int(math.Ceil(d.Seconds()))
			return nil, &Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "rate_limit_exceeded",
				Message:    fmt.Sprintf("Rate limit reached: %g requests per second per API key. Please retry after %d s.", l.cfg.Rate, max(secs, 1)),
				RetryAfter: max(secs, 1)}
		}
	}
	cl.inFlight++
	return func() {
		l.mu.Lock()
		cl.inFlight--
		l.mu.Unlock()
	}, nil
}

// evictLocked drops clients with nothing in flight, oldest first, down to
// three quarters of the table.
func (l *limiter) evictLocked(now time.Time) {
	for id, cl := range l.clients {
		if len(l.clients) <= maxTrackedClients*3/4 {
			return
		}
		if cl.inFlight == 0 && now.Sub(cl.lastSeen) > time.Minute {
			delete(l.clients, id)
		}
	}
	for id, cl := range l.clients { // still full: any idle one
		if len(l.clients) <= maxTrackedClients*3/4 {
			return
		}
		if cl.inFlight == 0 {
			delete(l.clients, id)
		}
	}
}

// limitMiddleware applies the per-client limits to generation requests.
func (s *Server) limitMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.limits.enabled() {
			return next(c)
		}
		release, refusal := s.limits.acquire(clientKey(c), time.Now())
		if refusal != nil {
			return refusal
		}
		defer release()
		return next(c)
	}
}
