// The benchmark's container floor: what a team that writes its server in Go would ship. A static net/http
// server (standard library only, CGO_ENABLED=0) in an image FROM scratch holding this one file. It answers
// the routes the benchmark hits (/readyz, /, /delay/N), writes one plain access line per request to stdout
// (unbuffered: each line is one write), and on SIGTERM drains with http.Server.Shutdown, then exits 0.
package main

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	host := os.Getenv("HOST")
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	hostname, _ := os.Hostname()
	page := "<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>shipshape</title>\n" +
		"  </head>\n  <body>\n    <p>This is a demo page!</p>\n    <p>Served by <code>" + html.EscapeString(hostname) +
		"</code>, go floor.</p>\n  </body>\n</html>\n"

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		status, body, kind := http.StatusOK, "ok\n", "text/plain; charset=utf-8"
		switch {
		case r.URL.Path == "/":
			body, kind = page, "text/html; charset=utf-8"
		case strings.HasPrefix(r.URL.Path, "/delay/"):
			seconds, err := strconv.ParseFloat(r.URL.Path[len("/delay/"):], 64)
			if err != nil || seconds < 0 {
				status, body = http.StatusBadRequest, "bad delay\n"
				break
			}
			if seconds > 10 {
				seconds = 10
			}
			select {
			case <-time.After(time.Duration(seconds * float64(time.Second))):
				body = "waited\n"
			case <-r.Context().Done():
				status, body = 499, ""
			}
		}
		w.Header().Set("Content-Type", kind)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if status != 499 {
			w.WriteHeader(status)
			w.Write([]byte(body))
		}
		fmt.Fprintf(os.Stdout, "%s %s %d %d %.3f %s %q\n", r.Method, r.URL.Path, status, len(body),
			float64(time.Since(started).Microseconds())/1000, r.RemoteAddr, r.UserAgent())
	})

	server := &http.Server{Addr: host + ":" + port, Handler: handler}
	done := make(chan struct{})
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := server.Shutdown(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "shutdown: %v\n", err)
			os.Exit(1)
		}
		close(done)
	}()
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "listen: %v\n", err)
		os.Exit(1)
	}
	<-done
	os.Exit(0)
}
