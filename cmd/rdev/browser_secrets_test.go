package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The secrets view against `rdev up`: a bad name is refused with the
// API's code; a secret set through the form reaches a job, and its value
// is nowhere in the page afterwards; setting it again replaces it;
// Delete asks, then it is gone.
func TestBrowserSecrets(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	n := startInProcess(t)
	ui := n.http + "/ui/"
	createProject(t, n, "sec-ui")
	const value = "typed-into-the-dashboard"
	names := func() []string {
		status, rb := call(t, http.MethodGet, n.http+"/v1/projects/sec-ui/secrets", nil)
		if status != http.StatusOK {
			t.Fatalf("list secrets: %d %s", status, rb)
		}
		var out []string
		for _, s := range mustJSON[contracts.SecretList](t, rb).Secrets {
			out = append(out, s.Name)
		}
		return out
	}
	jobSees := func(want string) bool { t.Helper(); return jobSeesSecret(t, n, "sec-ui", "token", want) }

	ctx := b.tab(t)
	signIn(t, ctx, ui, adminKey)
	do(t, ctx, "the secrets view", chromedp.Click(chromedp.CSS(`#nav a[data-view=secrets]`)),
		until(`location.hash === '#/secrets' && document.querySelector('#secrets .empty') !== null`))
	// The form's pattern would stop "bad name" in the browser; the API's
	// own refusal is what this checks, so the pattern is taken off.
	do(t, ctx, "a name the API refuses", chromedp.Evaluate[chromedp.Void](`document.querySelector('#sec-name').removeAttribute('pattern')`),
		chromedp.SetValue(chromedp.ID("sec-name"), "bad name"), chromedp.SetValue(chromedp.ID("sec-value"), value),
		chromedp.Click(chromedp.ID("set")), until(`document.querySelector('#secret-error [data-code=invalid_secret_name]') !== null`))
	if got := names(); len(got) != 0 {
		t.Fatalf("a refused set left %q", got)
	}
	do(t, ctx, "set it", chromedp.SetValue(chromedp.ID("sec-name"), "token"), chromedp.SetValue(chromedp.ID("sec-value"), value),
		chromedp.Click(chromedp.ID("set")), until(`document.querySelector('#secrets tr[data-secret=token]') !== null`))
	if page := eval[string](t, ctx, `document.documentElement.outerHTML + document.querySelector('#sec-value').value`); strings.Contains(page, value) {
		t.Error("the value is still in the page after it was set")
	}
	if !jobSees(value) {
		t.Fatal("a job did not see the value set through the page")
	}
	b.shot(t, ctx, "secrets")
	do(t, ctx, "replace it", chromedp.SetValue(chromedp.ID("sec-name"), "token"), chromedp.SetValue(chromedp.ID("sec-value"), "second"),
		chromedp.Click(chromedp.ID("set")), until(`[...document.querySelectorAll('#toast div')].some(d => d.textContent === 'Secret token replaced')`))
	if !jobSees("second") {
		t.Fatal("a job did not see the replaced value")
	}
	do(t, ctx, "delete it", chromedp.Click(chromedp.CSS(`#secrets tr[data-secret=token] button`)),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")), chromedp.Click(chromedp.ID("confirm-ok")),
		until(`document.querySelector('#secrets .empty') !== null`))
	if got := names(); len(got) != 0 {
		t.Fatalf("after delete: %q", got)
	}
}
