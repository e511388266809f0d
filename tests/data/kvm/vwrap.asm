; vwrap.asm -- legacy virtio-blk's 16-bit ring indexes wrapping: the
; program resets the device (00:02.0, record.sh's NAME@0+v), puts its own
; 256-entry queue at PFN 0x10, and submits 65,546 GET_ID requests (header,
; 20-byte buffer, status: 3 descriptors each) in batches of 64 at a time
; in flight after a first batch of 10, so the avail and used indexes wrap
; from 0xFFFF to 0 in the middle of a batch; it waits for each batch on the
; used index.  To debugcon: the number of used elements whose id or
; length was not the expected one (16-bit), the OR of all status bytes, the
; final avail and used indexes, the ISR, the last buffer (20 bytes).
; tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC  equ 0xE9
RING  equ 0x1000        ; segment of the vring (PFN 0x10)
AVAIL equ 0x1000        ; offsets in it
USED  equ 0x2000
HDRS  equ 0x3000        ; 64 headers of 16 bytes
BUFS  equ 0x3400        ; 64 buffers of 32 bytes
STATS equ 0x3C00        ; 64 status bytes
BATCHES equ 1024        ; after the first batch of 10
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov ss, ax
  mov sp, 0x7000
  ; BAR0 of 00:02.0
  mov dx, 0xCF8
  mov eax, 0x80001010
  out dx, eax
  mov dx, 0xCFC
  in eax, dx
  and ax, 0xFFFC
  mov [iob], ax
  ; reset, ACKNOWLEDGE|DRIVER, queue 0 at PFN 0x10, DRIVER_OK
  mov dx, [iob]
  add dx, 0x12
  xor al, al
  out dx, al
  mov al, 3
  out dx, al
  ; clear the ring area (0x10000..0x13FFF)
  push word RING
  pop es
  xor di, di
  xor ax, ax
  mov cx, 0x2000
  rep stosw
  ; 64 chains: 3k -> 3k+1 -> 3k+2
  xor bx, bx            ; k
  xor di, di
.mk:
  mov ax, bx
  shl ax, 4
  add ax, HDRS
  mov [es:di], ax               ; header (in segment 0x1000: + 0x10000)
  mov word [es:di + 2], 1
  mov dword [es:di + 4], 0
  mov dword [es:di + 8], 16
  mov word [es:di + 12], 1      ; NEXT
  mov ax, bx
  imul ax, 3
  inc ax
  mov [es:di + 14], ax
  mov ax, bx
  shl ax, 5
  add ax, BUFS
  mov [es:di + 16], ax
  mov word [es:di + 18], 1
  mov dword [es:di + 20], 0
  mov dword [es:di + 24], 20
  mov word [es:di + 28], 3      ; NEXT|WRITE
  mov ax, bx
  imul ax, 3
  add ax, 2
  mov [es:di + 30], ax
  mov ax, bx
  add ax, STATS
  mov [es:di + 32], ax
  mov word [es:di + 34], 1
  mov dword [es:di + 36], 0
  mov dword [es:di + 40], 1
  mov word [es:di + 44], 2      ; WRITE
  mov word [es:di + 46], 0
  ; its header: GET_ID
  mov si, bx
  shl si, 4
  mov dword [es:HDRS + si], 8
  add di, 48
  inc bx
  cmp bx, 64
  jb .mk
  mov dx, [iob]
  add dx, 0x0E
  xor ax, ax
  out dx, ax                    ; queue select 0
  mov dx, [iob]
  add dx, 0x08
  mov eax, 0x10
  out dx, eax                   ; PFN
  mov dx, [iob]
  add dx, 0x12
  mov al, 7
  out dx, al
  ; the batches
  mov cx, 10
  call batch
  mov bp, BATCHES
.b:
  mov cx, 64
  call batch
  dec bp
  jnz .b
  ; results
  mov ax, [bad]
  call put2
  mov al, [stor]
  out DBGC, al
  mov ax, [es:AVAIL + 2]
  call put2
  mov ax, [es:USED + 2]
  call put2
  mov dx, [iob]
  add dx, 0x13
  in al, dx
  out DBGC, al
  mov si, BUFS + 63 * 32
  mov cx, 20
.l:
  mov al, [es:si]
  out DBGC, al
  inc si
  loop .l
  mov al, 0x10
  out 0xF4, al
  cli
  hlt

; CX requests: chains 0, 3, 6, ... into the avail ring, notify, wait for
; the used index, check the used elements
batch:
  mov bx, [es:AVAIL + 2]
  push bx
  xor si, si
.a:
  mov ax, si
  imul ax, 3
  mov di, bx
  and di, 0xFF
  shl di, 1
  mov [es:AVAIL + 4 + di], ax
  inc bx
  inc si
  cmp si, cx
  jb .a
  mov [es:AVAIL + 2], bx        ; the index, 16-bit: it wraps
  mov dx, [iob]
  add dx, 0x10
  xor ax, ax
  out dx, ax                    ; notify queue 0
.w:
  cmp [es:USED + 2], bx
  jne .w
  pop bx                        ; the first used element of the batch
  xor si, si
.c:
  mov di, bx
  and di, 0xFF
  shl di, 3
  mov ax, si
  imul ax, 3
  cmp [es:USED + 4 + di], ax
  jne .bad
  cmp dword [es:USED + 8 + di], 21
  je .ok
.bad:
  inc word [bad]
.ok:
  mov al, [es:STATS + si]
  or [stor], al
  mov byte [es:STATS + si], 0xFF
  inc bx
  inc si
  cmp si, cx
  jb .c
  ret
put2:
  out DBGC, al
  mov al, ah
  out DBGC, al
  ret
iob:  dw 0
bad:  dw 0
stor: db 0
  times 510-($-$$) db 0
  dw 0xAA55
