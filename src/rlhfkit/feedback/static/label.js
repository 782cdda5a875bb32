// Keyboard shortcuts for the labeling page. Every control that has a key carries it in data-key, so
// the keys shown on the page and the keys that work come from the same place (the server's key table).
// Without this script the page still works with the mouse: it is plain HTML forms.
(function () {
  "use strict";

  var form = document.getElementById("label-form");
  var controls = {};
  document.querySelectorAll("[data-key]").forEach(function (el) {
    controls[el.getAttribute("data-key")] = el;
  });
  var sending = false;

  function send(target) {
    if (sending || !target) return;
    if (target === form && !answerComplete()) return;
    sending = true;  // a second key press must not post the same form twice
    target.submit();
  }

  function showError(message) {
    var box = document.getElementById("client-error");
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
  }

  function answerComplete() {
    var choice = form.querySelector('input[name="choice"]:checked');
    if (!choice) {
      showError("Choose an answer first.");
      return false;
    }
    var needsStrength = choice.value === "left" || choice.value === "right";
    if (needsStrength && !form.querySelector('input[name="strength"]:checked')) {
      showError("Say how much better: 1 slightly, 2 clearly, 3 much.");
      return false;
    }
    return true;
  }

  if (form) {
    form.addEventListener("submit", function (event) {
      if (!answerComplete()) {
        event.preventDefault();
        return;
      }
      sending = true;
    });
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" &&
      (target.type === "text" || target.type === "password")));
    if (typing) {
      if (event.key === "Escape") {
        target.blur();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.form === form) {
        event.preventDefault();
        send(form);
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var control = controls[event.key];
    if (!control) return;
    event.preventDefault();
    if (control.tagName === "TEXTAREA") {
      control.focus();
    } else if (control.tagName === "BUTTON") {
      send(control.form);
    } else {
      control.click();  // radio: select it; checkbox: toggle it
    }
  });
})();
