package console_test

// The console in a real browser: headless Chromium driven by chromedp
// against the API on the mock engine, in process. Skipped, saying why,
// where no Chromium is installed (apt-get install chromium); CI installs it
// (.ci/run). Screenshots go to build/artifacts/console/.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/gptoss/server/coordinator/mock"
)

// chromium finds the browser: $CHROMIUM, then the usual names on PATH.
func chromium() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	return ""
}

// page is one browser tab on the console.
type page struct {
	t   *testing.T
	ctx context.Context

	mu sync.Mutex
	// problems are what the page wrote to its console as errors, and its
	// uncaught exceptions (network errors excluded: some are expected).
	problems []string
}

const (
	viewW, viewH = 1280, 800
	waitFor      = 10 * time.Second
)

// openPage starts a browser of its own (so no two tests share storage) and
// opens url in it.
func openPage(t *testing.T, url string) *page {
	t.Helper()
	bin := chromium()
	if bin == "" {
		t.Skip("no Chromium found (apt-get install chromium, or set CHROMIUM to its path): the console's browser tests need one")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.DisableGPU,
		chromedp.WindowSize(viewW, viewH), chromedp.UserDataDir(t.TempDir()))
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root (CI containers).
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 60*time.Second)
	p := &page{t: t, ctx: ctx}
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				p.mu.Lock()
				p.problems = append(p.problems, m.String())
				p.mu.Unlock()
			}
		}
	}()
	p.do(chromedp.EmulateViewport(viewW, viewH), chromedp.Navigate(url))
	p.waitJS(`document.getElementById('t-status').textContent !== '–'`, "the first poll of /health")
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, m := range p.problems {
			t.Errorf("the page's console: %s", m)
		}
	})
	return p
}

// do runs actions, failing the test on error.
func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// waitJS waits until the expression is truthy.
func (p *page) waitJS(js, what string) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(waitFor), chromedp.WithPollingInterval(20*time.Millisecond)))
	if err != nil {
		shown, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText.slice(0, 3000)`))
		p.shot("failed-" + sanitize(p.t.Name()))
		p.t.Fatalf("waiting for %s (%s): %v\nthe page shows:\n%s", what, js, err, shown)
	}
}

func sanitize(s string) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(s)
}

// text is an element's text.
func (p *page) text(sel string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? '')`, sel))
}

// fill sets a field's value.
func (p *page) fill(sel, value string) {
	p.t.Helper()
	p.do(chromedp.SetValue(chromedp.CSS(sel), value))
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.do(chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// send types a message and sends it.
func (p *page) send(msg string) {
	p.t.Helper()
	p.fill("#chat-input", msg)
	p.click("#chat-send")
}

// artifacts is build/artifacts/console under the module's root.
func artifacts(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	out := filepath.Join(dir, "build", "artifacts", "console")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// shot saves a screenshot of the viewport as name.png.
func (p *page) shot(name string) {
	p.t.Helper()
	b, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	file := filepath.Join(artifacts(p.t), name+".png")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", file)
}

// TestBrowserPageLoads: the page comes up with the server's model,
// profiles, a simulated tensor-parallel deployment's workers, the KV cache
// and the charts; every field has a label; a phone-sized window needs no
// sideways scrolling.
func TestBrowserPageLoads(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2, paged: true})
	// The scheduler takes the KV geometry at its first step.
	<-e.stream(context.Background(), 5)
	p := openPage(t, e.url+"/")
	if loc := eval[string](p, `location.pathname`); loc != "/ui/" {
		t.Errorf("/ led to %s", loc)
	}
	p.waitJS(`document.getElementById('server-line').textContent.includes('gpt-oss-20b')`, "the model in the header")
	if s := p.text("#server-line"); !strings.Contains(s, "mock engine") {
		t.Errorf("the header does not say mock: %q", s)
	}
	if got := eval[[]string](p, `[...document.querySelectorAll('#chat-profile option')].map(o => o.textContent)`); strings.Join(got, ",") != "balanced (default),latency_first,quality_first" {
		t.Errorf("profiles %q", got)
	}
	p.waitJS(`document.querySelectorAll('#workers tbody tr').length === 2`, "the two workers")
	if w := p.text("#workers tbody tr"); !strings.Contains(w, "GPU 0 (simulated)") || !strings.Contains(w, "ready") || !strings.Contains(w, "GiB") {
		t.Errorf("worker row %q", w)
	}
	if n := eval[int](p, `document.querySelectorAll('#charts figure svg').length`); n != 6 {
		t.Errorf("%d charts", n)
	}
	p.waitJS(`document.getElementById('kv').textContent.includes('free of 2048')`, "the KV cache")
	p.waitJS(`document.getElementById('key-status').textContent.includes('needs no API key')`, "the key check")
	if unlabelled := eval[[]string](p, `[...document.querySelectorAll('input, select, textarea, button')]
		.filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim())).map(e => e.id)`); len(unlabelled) > 0 {
		t.Errorf("fields without a label: %q", unlabelled)
	}
	// The dashboard's reading of /metrics: label escapes, summed series,
	// a quantile interpolated in its bucket, one past the last finite bound.
	math, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]float64](`import('./metrics.js').then((m) => {
		const text = '# TYPE h histogram\n' +
			'h_bucket{a="x\\"y",le="0.1"} 1\nh_bucket{a="x\\"y",le="0.2"} 4\nh_bucket{a="x\\"y",le="+Inf"} 5\n' +
			'h_bucket{a="z",le="0.1"} 1\nh_bucket{a="z",le="0.2"} 2\nh_bucket{a="z",le="+Inf"} 3\nh_count{a="z"} 3\n';
		const p = m.parseMetrics(text);
		const h = m.histogram(p, 'h');
		return [m.quantile(0.5, h), m.quantile(0.99, h), m.total(p, 'h_count'), p.get('h_bucket')[0].labels.a.length];
	})`, chromedp.EvalAwaitPromise))
	if err != nil || len(math) != 4 || math[0] < 0.1499 || math[0] > 0.1501 || math[1] != 0.2 || math[2] != 3 || math[3] != 3 {
		t.Errorf("metrics.js: %v, %v; want [0.15 0.2 3 3]", math, err)
	}
	// Keyboard: the first Tab reaches the skip link, which leads to the message box.
	p.do(chromedp.KeyEvent("\t"))
	if f := eval[string](p, `document.activeElement.className`); f != "skip" {
		t.Errorf("the first Tab focused %q, not the skip link", f)
	}
	p.shot("page")
	p.do(chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	p.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		return err
	}))
	if bg := eval[string](p, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(15, 20, 25)" {
		t.Errorf("dark background %s", bg)
	}
	p.shot("page-dark")

	p.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	p.waitJS(`getComputedStyle(document.querySelector('.jump')).display !== 'none'`, "the phone layout")
	if over := eval[bool](p, `document.documentElement.scrollWidth > window.innerWidth + 1`); over {
		t.Errorf("the phone layout scrolls sideways: %v > %v", eval[int](p, `document.documentElement.scrollWidth`), eval[int](p, `window.innerWidth`))
	}
	p.shot("phone")
}

// TestBrowserChatStreams: an answer streams in (the reasoning apart,
// folded once the answer starts), with its numbers; a tool call shows its
// name and arguments.
func TestBrowserChatStreams(t *testing.T) {
	e := newEnv(t, envConfig{timing: mock.Timing{Step: 15 * time.Millisecond}})
	p := openPage(t, e.url+"/ui/")
	p.send("Hello there")
	// Seen while the answer is still streaming: the send button is off
	// until it ends.
	p.waitJS(`document.querySelector('.msg.assistant .reasoning-text')?.textContent.length > 0 &&
		document.getElementById('chat-send').disabled`, "reasoning while streaming")
	p.waitJS(`document.querySelector('.msg.assistant .content')?.textContent.length > 0 &&
		document.getElementById('chat-send').disabled`, "the answer while streaming")
	p.waitJS(`document.querySelector('.msg.assistant .meta')?.textContent.includes('tokens/s')`, "the answer's numbers")
	meta := p.text(".msg.assistant .meta")
	for _, want := range []string{"prompt", "output tokens", "TTFT", "tokens/s", "finish: "} {
		if !strings.Contains(meta, want) {
			t.Errorf("numbers %q lack %q", meta, want)
		}
	}
	content := p.text(".msg.assistant .content")
	reasoning := p.text(".msg.assistant .reasoning-text")
	if !strings.Contains(content, "mock") || strings.Contains(content, "<|") || reasoning == "" || strings.Contains(content, reasoning) {
		t.Errorf("answer %q, reasoning %q", content, reasoning)
	}
	if eval[bool](p, `document.querySelector('.msg.assistant details.reasoning').open`) {
		t.Error("the reasoning stays unfolded after the answer began")
	}
	p.click(".msg.assistant details.reasoning summary")
	if !eval[bool](p, `document.querySelector('.msg.assistant details.reasoning').open`) {
		t.Error("the reasoning does not unfold")
	}
	if s := p.text("#chat-status"); s != "Answer complete." {
		t.Errorf("status %q", s)
	}

	// A tool call, after an example tool is offered.
	p.click(".more summary")
	p.click("#chat-tools-example")
	p.fill("#chat-input", "What is the weather in Paris?")
	p.click("#chat-send")
	p.waitJS(`document.querySelectorAll('.msg.assistant').length === 2 &&
		document.querySelectorAll('.msg.assistant')[1].querySelector('.meta').textContent.includes('tool_calls')`, "the tool call")
	if name := p.text(".tool-call .tool-name"); name != "get_weather" {
		t.Errorf("tool %q", name)
	}
	if args := p.text(".tool-call .tool-args"); !strings.Contains(args, `"city"`) {
		t.Errorf("arguments %q", args)
	}
	p.shot("chat")
}

// TestBrowserWithoutStreaming: a server that does not stream
// (--enable-streaming=false) gets whole requests, shown the same way.
func TestBrowserWithoutStreaming(t *testing.T) {
	e := newEnv(t, envConfig{noStreaming: true})
	p := openPage(t, e.url+"/ui/")
	p.waitJS(`document.getElementById('server-line').textContent.includes('gpt-oss-20b')`, "/health read")
	p.send("Hello")
	p.waitJS(`document.querySelector('.msg.assistant .meta')?.textContent.includes('finish: stop')`, "the whole answer")
	if c, r := p.text(".msg.assistant .content"), p.text(".msg.assistant .reasoning-text"); !strings.Contains(c, "mock") || r == "" {
		t.Errorf("answer %q, reasoning %q", c, r)
	}
	if m := p.text(".msg.assistant .meta"); !strings.Contains(m, "output tokens") {
		t.Errorf("numbers %q", m)
	}
}

// TestBrowserStopCancels: Stop aborts the stream mid-way, and the server
// counts the request as cancelled (the client left).
func TestBrowserStopCancels(t *testing.T) {
	e := newEnv(t, envConfig{timing: mock.Timing{Step: 50 * time.Millisecond}, minReply: 2000})
	p := openPage(t, e.url+"/ui/")
	p.send("Write a long essay")
	p.waitJS(`document.querySelector('.msg.assistant .content')?.textContent.length > 0`, "the answer to begin")
	if eval[bool](p, `document.getElementById('chat-stop').disabled`) {
		t.Fatal("Stop is not offered while streaming")
	}
	p.click("#chat-stop")
	p.waitJS(`document.querySelector('.msg.assistant .meta').textContent.includes('stopped')`, "the answer marked stopped")
	if s := p.text("#chat-status"); s != "Stopped." {
		t.Errorf("status %q", s)
	}
	deadline := time.Now().Add(waitFor)
	for {
		tot := e.statsTotal(t)
		if tot["cancelled_total"] == 1.0 && tot["active"] == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not count the stopped request as cancelled: %v", tot)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.waitJS(`document.getElementById('t-cancelled').textContent === '1'`, "the dashboard's cancelled count")
	if !eval[bool](p, `document.getElementById('chat-stop').disabled && !document.getElementById('chat-send').disabled`) {
		t.Error("the buttons did not return to Send")
	}
	// The answer is cut short: far from the 2000 tokens it would have had.
	if n := len(p.text(".msg.assistant .content")); n > 2000 {
		t.Errorf("%d characters after stopping", n)
	}
}

// TestBrowserDashboardLive: while requests generate, the dashboard's
// numbers and charts move; the workers follow the steps; the KV cache
// fills and the prefix cache hits. Its screenshot (dashboard.png: the chat
// answered beside a running load) is the README's docs/console.png.
func TestBrowserDashboardLive(t *testing.T) {
	e := newEnv(t, envConfig{timing: mock.Timing{Step: 20 * time.Millisecond, PerSeq: 200 * time.Microsecond}, minReply: 300, workers: 2, paged: true})
	// A first request leaves its prompt's blocks in the prefix cache.
	<-e.stream(context.Background(), 5)
	p := openPage(t, e.url+"/ui/")
	p.waitJS(`document.getElementById('t-running').textContent === '0'`, "nothing running before the load")
	steps0 := p.text("#workers tbody tr td:nth-child(6)")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var done []chan struct{}
	for range 4 {
		done = append(done, e.stream(ctx, 300))
	}
	p.fill("#chat-max", "80")
	p.send("How does tensor parallelism split a transformer layer?")
	p.waitJS(`parseInt(document.getElementById('t-running').textContent) >= 4`, "the load running")
	p.waitJS(`parseFloat(document.getElementById('t-tps').textContent) > 0`, "tokens/s above zero")
	p.waitJS(`document.querySelector('#chart-tps path.line.s0').getAttribute('d').includes('L')`, "the tokens/s chart drawn")
	p.waitJS(`parseFloat(document.getElementById('t-kv').textContent) > 0`, "KV cache in use")
	p.waitJS(`parseFloat(document.getElementById('t-prefix').textContent) > 0`, "prefix cache hits")
	p.waitJS(`document.querySelector('.msg.assistant .meta')?.textContent.includes('tokens/s')`, "the chat's answer")
	p.waitJS(`document.querySelector('#chart-itl li strong').textContent !== '–'`, "an inter-token latency percentile")
	if steps := p.text("#workers tbody tr td:nth-child(6)"); steps == steps0 {
		t.Errorf("the workers' steps did not move: %s", steps)
	}
	// A few seconds of the load on the charts, for the picture.
	time.Sleep(time.Until(start.Add(5 * time.Second)))
	p.shot("dashboard")
	for _, d := range done {
		<-d
	}
	p.waitJS(`document.getElementById('t-running').textContent === '0'`, "the load to end")
	p.waitJS(`[...document.querySelectorAll('#profiles tbody tr')].some(r => r.cells[0].textContent.startsWith('balanced') && r.cells[3].textContent === '6')`,
		"six requests counted under balanced")
	p.waitJS(`parseFloat(document.querySelector('#chart-rps li strong').textContent) > 0`, "requests finished per second")
}

// TestBrowserStartupProgress: while the model downloads, the dashboard
// shows the files' progress and a chat gets a readable 503; once ready,
// the progress goes.
func TestBrowserStartupProgress(t *testing.T) {
	st := &fakeStartup{phase: "downloading"}
	e := newEnv(t, envConfig{startup: st})
	p := openPage(t, e.url+"/ui/")
	p.waitJS(`!document.getElementById('startup').hidden`, "the start-up card")
	text := p.text("#startup")
	for _, want := range []string{"downloading", "openai/gpt-oss-20b@main", "Download 40%", "model-00001-of-00002.safetensors", "12.8 GiB"} {
		if !strings.Contains(text, want) {
			t.Errorf("the start-up card lacks %q: %s", want, text)
		}
	}
	if n := eval[int](p, `document.querySelectorAll('#startup progress').length`); n != 3 {
		t.Errorf("%d progress bars, want 3 (the whole and two files)", n)
	}
	if s := p.text("#t-status"); s != "starting" {
		t.Errorf("status %q", s)
	}
	p.send("Hello")
	p.waitJS(`document.querySelector('.msg.assistant .error')`, "the 503")
	if msg := p.text(".msg.assistant .error"); !strings.Contains(msg, "503 Service Unavailable") || !strings.Contains(msg, "downloading") || !strings.Contains(msg, "Try again in 30 s") {
		t.Errorf("error %q", msg)
	}
	p.shot("startup")
	st.setPhase("ready")
	p.waitJS(`document.getElementById('startup').hidden`, "the start-up card to go")
	p.send("Hello again")
	p.waitJS(`document.querySelectorAll('.msg.assistant')[1]?.querySelector('.meta').textContent.includes('tokens/s')`, "an answer once ready")
}

// TestBrowserAPIKey: on a server with a key the page asks for it; a wrong
// key gets a readable 401 in the chat; the right one works and is kept
// across a reload.
func TestBrowserAPIKey(t *testing.T) {
	const key = "sk-console-test"
	e := newEnv(t, envConfig{keys: []string{key}})
	p := openPage(t, e.url+"/ui/")
	p.waitJS(`!document.getElementById('key-panel').hidden &&
		document.getElementById('key-status').textContent.includes('requires an API key')`, "the key prompt")
	if s := p.text("#key-toggle"); s != "API key needed" {
		t.Errorf("key button %q", s)
	}
	p.fill("#key-input", "sk-wrong")
	p.click("#key-form button[type=submit]")
	p.waitJS(`document.getElementById('key-status').textContent.includes('refused')`, "the wrong key refused")
	p.send("Hi")
	p.waitJS(`document.querySelector('.msg.assistant .error')`, "the 401")
	msg := p.text(".msg.assistant .error")
	if !strings.Contains(msg, "401 Unauthorized") || !strings.Contains(msg, "Incorrect API key provided") || !strings.Contains(msg, `"API key"`) {
		t.Errorf("error %q", msg)
	}
	if f := eval[string](p, `document.activeElement.id`); f != "key-input" {
		t.Errorf("after the 401 the focus is on %q, not the key", f)
	}
	p.shot("key-401")

	p.fill("#key-input", key)
	p.click("#key-form button[type=submit]")
	p.waitJS(`document.getElementById('key-status').textContent === 'The key is accepted.'`, "the key accepted")
	p.send("Hi again")
	p.waitJS(`document.querySelectorAll('.msg.assistant')[1]?.querySelector('.meta').textContent.includes('tokens/s')`, "an answer with the key")
	if k := eval[string](p, `localStorage.getItem('gptoss.apiKey')`); k != key {
		t.Errorf("stored key %q", k)
	}
	p.do(chromedp.Reload())
	p.waitJS(`document.getElementById('key-status').textContent === 'The key is accepted.'`, "the kept key accepted after a reload")
	if !eval[bool](p, `document.getElementById('key-panel').hidden`) {
		t.Error("the key panel opens although the kept key works")
	}
	p.send("Hi after the reload")
	p.waitJS(`document.querySelector('.msg.assistant .meta')?.textContent.includes('tokens/s')`, "an answer after the reload")
}
